"""Deploy every stack, for dev (us-west-2) and prod (us-east-1), into the local AWS-API server (moto) the
way scripts/deploy.sh does - bootstrap, `aws cloudformation package` of the staged templates with stand-in
Lambda zips, then app, canary and observability with the environment files' parameters and the wired
outputs - and check through the service APIs what was created. Alarms, which moto's CloudFormation does
not create, are replayed through PutMetricAlarm / PutCompositeAlarm.

Stacks are created with CreateStack rather than by scripts/deploy.sh: moto 5.2.5 never fills a stack's
outputs after ExecuteChangeSet (the script wires outputs), and its CreateChangeSet cannot fetch a template
that `deploy --s3-bucket` uploaded through a custom endpoint. Tried by hand against moto, the script stages,
packages, keeps the release and reaches CreateChangeSet; the tests below run destroy.sh for real.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.validate import validate_parameters
import pytest
import yaml

import render
from conftest import ENVIRONMENTS, ROOT

ACCOUNT = "123456789012"  # moto's account
STACKS = ("app", "canary", "observability")
TEMPLATE_OF = {"data": "data", "app": "relay", "canary": "canary", "observability": "observability"}
# What moto 5.2.5's CloudFormation accepts but does not create: these are checked by cfn-lint, checkov and
# the template tests only (and alarms additionally by the PutMetricAlarm replay below). The test fails if
# this list and moto's behaviour disagree, so the list in docs/OPERATE.md (Ops checks) stays true.
LINT_ONLY_TYPES = {
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Stage",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::CompositeAlarm",
    "AWS::SNS::TopicPolicy",
    "AWS::S3::BucketPolicy",
    "AWS::IAM::OIDCProvider",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::SecretsManager::Secret",
}
# Created by moto (see the permission test) but listed without a physical id.
CREATED_WITHOUT_ID = {"AWS::Lambda::Permission"}
# Stand-in for the API id moto cannot produce (AWS::ApiGatewayV2::Api is lint-only).
STAND_IN_API_ID = "m0t0api1"


def stack_name(stack: str, env: str) -> str:
    return f"relay-{stack}-{env}"


def clients(region: str):
    return lambda service: boto3.client(service, region_name=region)


def _outputs(cf, name: str) -> dict[str, str]:
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", f"{name}: {stack['StackStatus']} {stack.get('StackStatusReason')}"
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) if o.get("OutputValue")}


def _clean(env: str, client) -> None:
    """Remove what an earlier run against the same server left (stacks, the retained table and bucket)."""
    cf = client("cloudformation")
    for stack in ("observability", "canary", "app", "data", "bootstrap"):
        try:
            cf.delete_stack(StackName=stack_name(stack, env))
        except botocore.exceptions.ClientError:
            pass
    try:
        client("iam").delete_policy(PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/relay-function-boundary-{env}")
    except botocore.exceptions.ClientError:
        pass
    ddb = client("dynamodb")
    try:
        ddb.update_table(TableName=f"relay-{env}", DeletionProtectionEnabled=False)
        ddb.delete_table(TableName=f"relay-{env}")
    except botocore.exceptions.ClientError:
        pass
    s3 = boto3.resource("s3", region_name=ENVIRONMENTS[env])
    bucket = s3.Bucket(f"relay-artifacts-{env}-{ACCOUNT}-{ENVIRONMENTS[env]}")
    try:
        bucket.object_versions.delete()
        bucket.objects.all().delete()
        bucket.delete()
    except botocore.exceptions.ClientError:
        pass


def _stand_in_zip(path: Path, marker: str = "the real zip is built by cargo-lambda") -> None:
    """A Lambda zip whose bootstrap only says `marker` (so two releases can have different code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bootstrap", f"#!/bin/sh\n# stand-in: {marker}\n")


def _create(cf, name: str, template: Path, params: dict[str, str]) -> dict[str, str]:
    cf.create_stack(
        StackName=name,
        TemplateBody=template.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
        Tags=[{"Key": "service", "Value": "relay"}],
    )
    return _outputs(cf, name)


def _stand_in_secret_arn(env: str) -> str:
    """What the data stack's AdminTokenSecretArn would be: moto creates no secret from a template."""
    return f"arn:aws:secretsmanager:{ENVIRONMENTS[env]}:{ACCOUNT}:secret:relay/{env}/admin-token-M0t0Ab"


def _deploy_app_canary_observability(env: str, cf, packaged: Path, stacks: dict, data: dict) -> dict:
    """The app, canary and observability stacks, wired as scripts/deploy.sh wires them."""
    app_params = {
        **stacks["app"],
        "TableName": data["TableName"],
        "TableArn": data["TableArn"],
        "AdminTokenSecretArn": data.get("AdminTokenSecretArn", _stand_in_secret_arn(env)),
    }
    app = _create(cf, stack_name("app", env), packaged / "relay.yaml", app_params)
    canary = _create(cf, stack_name("canary", env), packaged / "canary.yaml", {**stacks["canary"], "TargetUrl": app["ApiUrl"]})
    observability_params = {**stacks["observability"], "ApiId": app.get("ApiId", STAND_IN_API_ID)}
    if observability_params.get("PagingEnabled") == "true":
        observability_params["PageEmail"] = "on-call@example.com"
    observability = _create(cf, stack_name("observability", env), packaged / "observability.yaml", observability_params)
    return {"app": app, "canary": canary, "observability": observability}


@pytest.fixture(scope="module")
def deployed(tool, environments, tmp_path_factory) -> dict[str, dict]:
    result = {}
    for env, region in ENVIRONMENTS.items():
        client = clients(region)
        _clean(env, client)
        cf = client("cloudformation")
        stacks = environments[env]["stacks"]
        boot = _create(cf, stack_name("bootstrap", env), ROOT / "infra" / "bootstrap.yaml", stacks["bootstrap"])
        bucket = boot["ArtifactBucketName"]

        # Staged exactly as scripts/deploy.sh stages them: templates in infra/, zips in target/lambda/.
        stage = tmp_path_factory.mktemp(f"stage-{env}")
        (stage / "infra").mkdir()
        for name in ("data", "relay", "canary"):
            shutil.copy(ROOT / "infra" / f"{name}.yaml", stage / "infra" / f"{name}.yaml")
        subprocess.run(
            [str(Path(tool("python"))), str(ROOT / "infra" / "render.py"), "--out", str(stage / "infra" / "observability.yaml")],
            check=True,
            capture_output=True,
        )
        for binary in ("relay", "healthcheck-lambda"):
            _stand_in_zip(stage / "target" / "lambda" / binary / "bootstrap.zip")
        packaged = stage / "packaged"
        packaged.mkdir()
        for name in ("data", "relay", "canary", "observability"):
            subprocess.run(
                [
                    tool("aws"), "cloudformation", "package", "--region", region,
                    "--template-file", str(stage / "infra" / f"{name}.yaml"), "--s3-bucket", bucket,
                    "--s3-prefix", f"artifacts/{env}", "--output-template-file", str(packaged / f"{name}.yaml"),
                ],
                check=True,
                capture_output=True,
            )

        outputs = {"bootstrap": boot, "data": _create(cf, stack_name("data", env), packaged / "data.yaml", stacks["data"])}
        outputs.update(_deploy_app_canary_observability(env, cf, packaged, stacks, outputs["data"]))
        api_id = outputs["app"].get("ApiId", STAND_IN_API_ID)
        result[env] = {
            "region": region,
            "client": client,
            "outputs": outputs,
            "packaged": packaged,
            "bucket": bucket,
            "variables": {"Env": env, "ApiId": api_id, "AWS::Region": region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        }
    return result


def test_packaged_templates_pass_cfn_lint_without_suppressions(deployed, tool):
    paths = [str(p) for d in deployed.values() for p in sorted(d["packaged"].glob("*.yaml"))]
    result = subprocess.run([tool("cfn-lint"), "--format", "parseable", "--", *paths], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_package_uploaded_the_lambda_zips(deployed):
    for env, d in deployed.items():
        s3 = d["client"]("s3")
        for name, logical in (("relay", "RelayFunction"), ("canary", "CanaryFunction")):
            template = yaml.safe_load((d["packaged"] / f"{name}.yaml").read_text())
            code = template["Resources"][logical]["Properties"]["Code"]
            assert code["S3Bucket"] == d["bucket"]
            head = s3.head_object(Bucket=code["S3Bucket"], Key=code["S3Key"])
            assert head["ContentLength"] > 0, f"{env}: {name} zip missing from the artifact bucket"


def test_the_table_exists_as_the_template_declares(deployed, templates):
    declared = templates["data"]["Resources"]["MessagesTable"]["Properties"]
    for env, d in deployed.items():
        table = d["client"]("dynamodb").describe_table(TableName=f"relay-{env}")["Table"]
        assert table["KeySchema"] == declared["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(declared["AttributeDefinitions"], key=str)
        assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
        indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
        for index in declared["GlobalSecondaryIndexes"]:
            assert indexes[index["IndexName"]]["KeySchema"] == index["KeySchema"]
            assert indexes[index["IndexName"]]["Projection"] == index["Projection"]
        assert table["DeletionProtectionEnabled"] is True
        tags = d["client"]("dynamodb").list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
        assert {"Key": "env", "Value": env} in tags
        assert d["outputs"]["data"]["TableArn"] == table["TableArn"]


def test_the_functions_run_with_the_environments_settings(deployed, environments):
    for env, d in deployed.items():
        lam = d["client"]("lambda")
        app = environments[env]["stacks"]["app"]
        relay = lam.get_function_configuration(FunctionName=f"relay-{env}")
        assert (relay["Runtime"], relay["Handler"], relay["Timeout"]) == ("provided.al2023", "bootstrap", 15)
        assert relay["MemorySize"] == int(app["MemorySize"])
        variables = relay["Environment"]["Variables"]
        assert variables["RELAY_ENV"] == env
        assert variables["RELAY_STORE"] == f"dynamodb:relay-{env}"
        assert variables["RUST_LOG"] == app["LogLevel"]
        assert variables["RELAY_LOG_BUFFER"] == app["LogBuffer"] == "debug", "both stacks keep debug lines for failures"
        assert str(variables["RELAY_RATE_LIMIT"]) == app["ClientRateLimit"]
        assert variables["RELAY_ADMIN_TOKEN_SECRET"].startswith(f"arn:aws:secretsmanager:{d['region']}:")
        assert "RELAY_ADMIN_TOKEN" not in variables, "the token itself never sits in the configuration"
        # 0 reserves nothing (dev: new accounts cannot spare any), else exactly that many.
        concurrency = lam.get_function_concurrency(FunctionName=f"relay-{env}")
        assert concurrency.get("ReservedConcurrentExecutions", 0) == int(app["ReservedConcurrency"])
        role = d["client"]("iam").get_role(RoleName=relay["Role"].split("/")[-1])["Role"]
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"].endswith(f":policy/relay-function-boundary-{env}")

        canary = lam.get_function_configuration(FunctionName=f"relay-canary-{env}")
        assert canary["Environment"]["Variables"]["HEALTHCHECK_STAGE"] == env
        assert canary["Environment"]["Variables"]["HEALTHCHECK_TARGET"] == d["outputs"]["app"]["ApiUrl"]
        canary_reserved = int(environments[env]["stacks"]["canary"]["ReservedConcurrency"])
        assert lam.get_function_concurrency(FunctionName=f"relay-canary-{env}").get("ReservedConcurrentExecutions", 0) == canary_reserved


def test_the_relay_reads_the_secret_the_data_stack_names(deployed):
    """moto 5.2.5 creates no secret from a template (AWS::SecretsManager::Secret is lint-only), so the
    data stack's AdminTokenSecretArn output is empty and the wiring is checked with the stand-in ARN."""
    for env, d in deployed.items():
        arn = d["outputs"]["data"].get("AdminTokenSecretArn", _stand_in_secret_arn(env))
        variables = d["client"]("lambda").get_function_configuration(FunctionName=f"relay-{env}")["Environment"]["Variables"]
        assert variables["RELAY_ADMIN_TOKEN_SECRET"] == arn


def test_log_groups_keep_logs_as_long_as_the_environment_says(deployed, environments):
    for env, d in deployed.items():
        groups = {g["logGroupName"]: g.get("retentionInDays") for g in d["client"]("logs").describe_log_groups(logGroupNamePrefix="/aws/")["logGroups"]}
        stacks = environments[env]["stacks"]
        assert groups[f"/aws/lambda/relay-{env}"] == int(stacks["app"]["LogRetentionDays"])
        assert groups[f"/aws/apigateway/relay-{env}/access"] == int(stacks["app"]["LogRetentionDays"])
        assert groups[f"/aws/lambda/relay-canary-{env}"] == int(stacks["canary"]["LogRetentionDays"])


def _physical_id(cf, stack: str, logical: str) -> str:
    # describe_stack_resource crashes in moto 5.2.5 when a stack holds a resource type it does not create.
    for resource in cf.describe_stack_resources(StackName=stack)["StackResources"]:
        if resource.get("LogicalResourceId") == logical:
            return resource["PhysicalResourceId"]
    raise AssertionError(f"{stack} has no {logical}")


def _policies(iam, role_name: str) -> list[dict]:
    out = []
    for policy in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):  # moto returns the document as a Python literal
            document = ast.literal_eval(document)
        out.extend(document["Statement"])
    return out


def test_the_roles_grant_only_the_templates_statements(deployed):
    for env, d in deployed.items():
        iam = d["client"]("iam")
        cf = d["client"]("cloudformation")
        statements = _policies(iam, _physical_id(cf, stack_name("app", env), "RelayFunctionRole"))
        table_arn = d["outputs"]["data"]["TableArn"]
        grants = {(s["Resource"] if isinstance(s["Resource"], str) else tuple(s["Resource"])): set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]) for s in statements}
        assert grants[table_arn] == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
        assert grants[f"{table_arn}/index/by_expiry"] == {"dynamodb:Query"}
        statements = _policies(iam, _physical_id(cf, stack_name("canary", env), "CanaryFunctionRole"))
        metric = [s for s in statements if s["Action"] == "cloudwatch:PutMetricData"]
        assert metric and metric[0]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Relay/Canary"}}


def test_the_schedule_invokes_the_canary_every_minute_without_retries(deployed):
    for env, d in deployed.items():
        events = d["client"]("events")
        rule = events.describe_rule(Name=f"relay-canary-{env}")
        assert rule["ScheduleExpression"] == "rate(1 minute)" and rule["State"] == "ENABLED"
        (target,) = events.list_targets_by_rule(Rule=f"relay-canary-{env}")["Targets"]
        assert target["Arn"].endswith(f":function:relay-canary-{env}")
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0


def test_api_gateway_and_eventbridge_may_invoke_their_functions(deployed):
    for env, d in deployed.items():
        lam = d["client"]("lambda")
        for function, principal in ((f"relay-{env}", "apigateway.amazonaws.com"), (f"relay-canary-{env}", "events.amazonaws.com")):
            policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
            principals = [s["Principal"]["Service"] for s in policy["Statement"] if s["Action"] == "lambda:InvokeFunction"]
            assert principals == [principal], f"{function}: invoked by {principals}"


def test_the_sns_topics_exist(deployed):
    for env, d in deployed.items():
        topics = {t["TopicArn"] for t in d["client"]("sns").list_topics()["Topics"]}
        assert d["outputs"]["observability"]["AlarmTopicArn"] in topics
        assert d["outputs"]["observability"]["PageTopicArn"] in topics


def test_the_dashboard_is_the_rendered_source(deployed):
    for env, d in deployed.items():
        for path in render.dashboard_files():
            name = f"{render.dashboard_name(path)}-{env}"
            body = json.loads(d["client"]("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
            assert body == render.substitute(render.load_dashboard(path), d["variables"]), f"{name} differs from {path.name}"


def test_moto_creates_every_resource_but_the_documented_lint_only_types(deployed, templates):
    not_created: set[str] = set()
    for env, d in deployed.items():
        cf = d["client"]("cloudformation")
        for stack in ("bootstrap", "data", *STACKS):
            template = templates["relay" if stack == "app" else stack]
            deployed_ids = {
                r.get("LogicalResourceId")
                for r in cf.describe_stack_resources(StackName=stack_name(stack, env))["StackResources"]
                if r.get("PhysicalResourceId")
            }
            for logical, resource in template["Resources"].items():
                if "Condition" in resource:
                    continue  # e-mail subscriptions and the optional OIDC provider follow parameters
                if logical not in deployed_ids:
                    not_created.add(resource["Type"])
    unexpected = not_created - LINT_ONLY_TYPES - CREATED_WITHOUT_ID
    assert not unexpected, f"moto did not create {sorted(unexpected)}: a real failure, or add to LINT_ONLY_TYPES with a reason"
    now_supported = LINT_ONLY_TYPES - not_created - {"AWS::IAM::OIDCProvider"}
    assert not now_supported, f"moto now creates {sorted(now_supported)}: assert them through the APIs instead"


# ---- alarms: replay each alarm's properties through the CloudWatch API -----------------------------------


def resolve(value, variables: dict, refs: dict, conditions: dict):
    """Evaluate the intrinsic functions the observability stack uses, with concrete values."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return render.substitute(value["Fn::Sub"], variables)
        if set(value) == {"Ref"}:
            return refs[value["Ref"]]
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return resolve(when_true if conditions[condition] else when_false, variables, refs, conditions)
        return {k: resolve(v, variables, refs, conditions) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, variables, refs, conditions) for v in value]
    return value


def replayed_alarms(d: dict, env: str, environments: dict, templates: dict) -> list[tuple[str, str, dict]]:
    obs = environments[env]["stacks"]["observability"]
    variables = {**d["variables"], "RunbookBaseUrl": templates["observability"]["Parameters"]["RunbookBaseUrl"]["Default"]}
    refs = {"AlarmTopic": d["outputs"]["observability"]["AlarmTopicArn"], "PageTopic": d["outputs"]["observability"]["PageTopicArn"]}
    conditions = {"Paging": obs["PagingEnabled"] == "true"}
    out = []
    for logical, res in templates["observability"]["Resources"].items():
        if res["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
            out.append((logical, res["Type"], resolve(res["Properties"], variables, refs, conditions)))
    return out


def test_every_alarm_is_accepted_by_put_metric_alarm_and_reads_back(deployed, environments, templates):
    doc = render.load_alarms()
    runbooks = {e["name"]: render.runbook_name(e) for e in [*doc["alarms"], *doc["slo_alarms"]]}
    for env, d in deployed.items():
        cw = d["client"]("cloudwatch")
        alarms = replayed_alarms(d, env, environments, templates)
        names = []
        for _, kind, props in alarms:
            if kind == "AWS::CloudWatch::Alarm":
                cw.put_metric_alarm(**props)  # botocore validates every field against the API model first
                names.append(props["AlarmName"])
        described = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
        assert set(described) == set(names)
        for _, kind, props in alarms:
            if kind != "AWS::CloudWatch::Alarm":
                continue
            got = described[props["AlarmName"]]
            for key in ("Threshold", "ComparisonOperator", "EvaluationPeriods", "DatapointsToAlarm", "TreatMissingData", "AlarmDescription"):
                assert got[key] == props[key], f"{props['AlarmName']}: {key} {got[key]!r} != {props[key]!r}"
            for key in ("AlarmActions", "OKActions"):  # none on an SLO window alarm
                assert got.get(key, []) == props.get(key, []), f"{props['AlarmName']}: {key}"
            assert len(got.get("Metrics", [])) == len(props.get("Metrics", []))
            name = props["AlarmName"].removesuffix("-" + env)
            assert f"/runbooks/{runbooks[name]}.md" in got["AlarmDescription"]


def test_the_composite_alarms_are_valid_name_existing_alarms_and_page_only_in_prod(deployed, environments, templates):
    """moto 5.2.5 does not implement PutCompositeAlarm: validate each request against the CloudWatch API
    model (what botocore checks before sending) and check its rule names alarms the replay created (metric
    alarms) or composites of the same stack (the SLO tiers, in the paging rule)."""
    paging = render.alarm_name(render.load_alarms()["composite"]["name"])
    for env, d in deployed.items():
        cw = d["client"]("cloudwatch")
        alarms = replayed_alarms(d, env, environments, templates)
        for _, kind, props in alarms:
            if kind == "AWS::CloudWatch::Alarm":
                cw.put_metric_alarm(**props)
        composites = {p["AlarmName"]: p for _, kind, p in alarms if kind == "AWS::CloudWatch::CompositeAlarm"}
        page_topic = d["outputs"]["observability"]["PageTopicArn"]
        alarm_topic = d["outputs"]["observability"]["AlarmTopicArn"]
        model = cw.meta.service_model.operation_model("PutCompositeAlarm").input_shape
        for name, props in composites.items():
            validate_parameters(props, model)
            children = re.findall(r'ALARM\("([^"]+)"\)', props["AlarmRule"])
            metric_children = [c for c in children if c not in composites]
            existing = {a["AlarmName"] for a in cw.describe_alarms(AlarmNames=metric_children)["MetricAlarms"]} if metric_children else set()
            assert existing == set(metric_children), f"{env} {name}: the rule names alarms that do not exist: {set(metric_children) - existing}"
            assert alarm_topic in props["AlarmActions"]
            assert (page_topic in props["AlarmActions"]) == (name == paging.replace("${Env}", env) and env == "prod"), name
            if "ActionsSuppressor" in props:
                assert props["ActionsSuppressor"] in composites, f"{name}: suppressed by {props['ActionsSuppressor']}, not a composite here"
        rule = composites[paging.replace("${Env}", env)]["AlarmRule"]
        children = re.findall(r'ALARM\("([^"]+)"\)', rule)
        assert rule == " OR ".join(f'ALARM("{c}")' for c in children), rule


def test_put_metric_alarm_validation_would_catch_a_broken_alarm(deployed):
    """The replay proves something: botocore rejects a malformed alarm before it is sent."""
    cw = next(iter(deployed.values()))["client"]("cloudwatch")
    with pytest.raises(botocore.exceptions.ParamValidationError):
        cw.put_metric_alarm(AlarmName="broken", EvaluationPeriods="five", ComparisonOperator="GreaterThanThreshold", Metrics=[{"Expression": "m1"}])


# ---- last: tear down with scripts/destroy.sh -------------------------------------------------------------


def _destroy(env: str, *flags: str) -> None:
    result = subprocess.run(
        ["bash", "scripts/destroy.sh", env, "--yes", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "RELAY_DEPLOY_VENV": str(Path(sys.executable).parent.parent)},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _live_stacks(cf) -> set[str]:
    return {s["StackName"] for s in cf.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"}


# ---- releases: bake, last good, automatic rollback (infra/release.py, run by scripts/deploy.sh) ---------

RELEASE = ROOT / "infra" / "release.py"


def _keep_release(d: dict, env: str, tool, name: str, packaged: Path) -> None:
    """Keep packaged templates under releases/<env>/<name>/, as scripts/deploy.sh does."""
    s3 = d["client"]("s3")
    for path in packaged.glob("*.yaml"):
        s3.put_object(Bucket=d["bucket"], Key=f"releases/{env}/{name}/{path.name}", Body=path.read_bytes())


def _package_stand_in_release(d: dict, env: str, tool, tmp_path: Path, marker: str) -> Path:
    """The relay template packaged with a stand-in zip that says `marker`, so its code differs."""
    stage = tmp_path / f"release-{marker}"
    (stage / "infra").mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "relay.yaml", stage / "infra" / "relay.yaml")
    _stand_in_zip(stage / "target" / "lambda" / "relay" / "bootstrap.zip", f"release {marker}")
    packaged = stage / "packaged"
    packaged.mkdir()
    subprocess.run(
        [tool("aws"), "cloudformation", "package", "--region", d["region"], "--template-file",
         str(stage / "infra" / "relay.yaml"), "--s3-bucket", d["bucket"], "--s3-prefix", f"artifacts/{env}",
         "--output-template-file", str(packaged / "relay.yaml")],
        check=True, capture_output=True,
    )
    for name in ("canary", "observability"):
        shutil.copy(d["packaged"] / f"{name}.yaml", packaged / f"{name}.yaml")
    return packaged


def _deploy_app(d: dict, env: str, packaged: Path) -> None:
    """What scripts/deploy.sh's `aws cloudformation deploy --no-fail-on-empty-changeset` does to the app
    stack (moto cannot run that command to the end; see the module docstring): update it to the packaged
    template, where deploying the template the stack already runs changes nothing and is no error."""
    cf = d["client"]("cloudformation")
    name = stack_name("app", env)
    params = [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
              for p in cf.describe_stacks(StackName=name)["Stacks"][0]["Parameters"]]
    try:
        cf.update_stack(StackName=name, TemplateBody=(packaged / "relay.yaml").read_text(), Parameters=params,
                        Capabilities=["CAPABILITY_IAM"])
    except cf.exceptions.ClientError as error:
        if "No updates are to be performed" not in str(error):
            raise


def _code(d: dict, env: str) -> str:
    return d["client"]("lambda").get_function(FunctionName=f"relay-{env}")["Configuration"]["CodeSha256"]


def _bake(d: dict, env: str, tool, release: str, seconds: float, during=None) -> subprocess.CompletedProcess:
    """infra/release.py bake, as scripts/deploy.sh runs it; `during` runs a second into the bake."""
    process = subprocess.Popen(
        [tool("python"), str(RELEASE), "bake", "--env", env, "--bucket", d["bucket"], "--release", release,
         "--seconds", str(seconds), "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AWS_REGION": d["region"], "AWS_DEFAULT_REGION": d["region"]},
    )
    if during is not None:
        time.sleep(1.5)
        during()
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def baking(deployed, environments, templates, tool, tmp_path_factory):
    """prod with every alarm in CloudWatch (replayed: moto's CloudFormation creates none), release A
    (what the fixture deployed) and a release B with other code, both kept in the artifact bucket."""
    env = "prod"
    d = deployed[env]
    cw = d["client"]("cloudwatch")
    for _, kind, props in replayed_alarms(d, env, environments, templates):
        if kind == "AWS::CloudWatch::Alarm":
            cw.put_metric_alarm(**props)
            cw.set_alarm_state(AlarmName=props["AlarmName"], StateValue="OK", StateReason="baseline")
    _keep_release(d, env, tool, "A", d["packaged"])
    b = _package_stand_in_release(d, env, tool, tmp_path_factory.mktemp("releases"), "B")
    _keep_release(d, env, tool, "B", b)
    return {"env": env, "d": d, "cw": cw, "a_code": _code(d, env), "b": b}


def test_a_quiet_bake_records_the_release_as_the_last_good_one(baking, tool):
    d, env = baking["d"], baking["env"]
    run = _bake(d, env, tool, "A", seconds=3)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "A is good" in run.stdout
    last = subprocess.run([tool("python"), str(RELEASE), "last-good", "--env", env, "--bucket", d["bucket"]],
                          capture_output=True, text=True, env={**os.environ, "AWS_REGION": d["region"]})
    assert last.stdout.strip() == "A", last.stdout + last.stderr


def test_an_alarm_during_the_bake_rolls_the_function_back_to_the_last_good_release(baking, tool):
    d, env, cw = baking["d"], baking["env"], baking["cw"]
    _deploy_app(d, env, baking["b"])
    assert _code(d, env) != baking["a_code"], "release B runs other code"
    alarm = f"RelayApi5xxRateHigh-{env}"
    try:
        run = _bake(d, env, tool, "B", seconds=60,
                    during=lambda: cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="drill"))
    finally:
        cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="drill over")
    assert run.returncode == 4, run.stdout + run.stderr
    assert f"in ALARM during the bake: {alarm}" in run.stdout and "rolled back to A" in run.stdout, run.stdout
    assert _code(d, env) == baking["a_code"], "the function runs release A's code again"


def test_an_slo_page_tier_firing_during_the_bake_rolls_back_too(baking, tool):
    d, env, cw = baking["d"], baking["env"], baking["cw"]
    windows = [f"RelaySloApiAvailabilityFast1h-{env}", f"RelaySloApiAvailabilityFast5m-{env}"]
    _deploy_app(d, env, baking["b"])

    def burn():
        for name in windows:
            cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="drill")

    try:
        run = _bake(d, env, tool, "B", seconds=60, during=burn)
    finally:
        for name in windows:
            cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="drill over")
    assert run.returncode == 4 and f"RelaySloApiAvailabilityFast-{env}" in run.stdout, run.stdout + run.stderr
    assert _code(d, env) == baking["a_code"]


def test_an_alarm_already_firing_is_not_held_against_the_release_and_a_quiet_bake_keeps_it(baking, tool):
    d, env, cw = baking["d"], baking["env"], baking["cw"]
    _deploy_app(d, env, baking["b"])
    alarm = f"RelayCanaryFailing-{env}"
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="an incident the release may fix")
    try:
        run = _bake(d, env, tool, "B", seconds=3)
    finally:
        cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="over")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"already in ALARM before this release, not held against it: {alarm}" in run.stdout
    assert _code(d, env) != baking["a_code"], "release B stays"
    last = subprocess.run([tool("python"), str(RELEASE), "last-good", "--env", env, "--bucket", d["bucket"]],
                          capture_output=True, text=True, env={**os.environ, "AWS_REGION": d["region"]})
    assert last.stdout.strip() == "B", "a quiet bake makes B the last good release"


def test_two_failed_canary_runs_during_the_bake_roll_back_too(baking, tool):
    """Last of the bake tests: its failed runs are timestamped in the minute after the bake began, where
    any later bake of the same stage would count them too."""
    d, env, cw = baking["d"], baking["env"], baking["cw"]
    _deploy_app(d, env, d["packaged"])  # A again, baked clean: the last good release once more
    assert _bake(d, env, tool, "A", seconds=2).returncode == 0
    _deploy_app(d, env, baking["b"])

    def failing_canary():
        now = datetime.now(timezone.utc)
        cw.put_metric_data(Namespace="Relay/Canary", MetricData=[
            {"MetricName": "RunSuccess", "Dimensions": [{"Name": "Stage", "Value": env}],
             "Timestamp": now + timedelta(seconds=k), "Value": 0.0} for k in (61, 62)])  # the next minute's runs

    run = _bake(d, env, tool, "B", seconds=60, during=failing_canary)
    assert run.returncode == 4 and "2 canary runs failed during the bake" in run.stdout, run.stdout + run.stderr
    assert _code(d, env) == baking["a_code"]


def test_destroy_keeps_the_data_and_a_redeploy_finds_it_twice_over_until_asked_to_delete_it(deployed, environments):
    """destroy, deploy, destroy, deploy: the data stack stays, so each redeploy finds the table (and an
    item written before the first destroy) where it was; only --delete-data removes stack, table and
    secret."""
    d = deployed["dev"]
    cf, ddb = d["client"]("cloudformation"), d["client"]("dynamodb")
    ddb.put_item(TableName="relay-dev", Item={"pk": {"S": "saved"}, "sk": {"S": "saved"}, "saved_value": {"S": "kept"}})
    stacks = environments["dev"]["stacks"]
    for _ in range(2):
        _destroy("dev")
        assert not {stack_name(s, "dev") for s in STACKS} & _live_stacks(cf), "stacks left behind"
        assert stack_name("data", "dev") in _live_stacks(cf), "the data stack must stay"
        redeployed = _deploy_app_canary_observability("dev", cf, d["packaged"], stacks, d["outputs"]["data"])
        assert redeployed["app"]["ApiUrl"]
        item = ddb.get_item(TableName="relay-dev", Key={"pk": {"S": "saved"}, "sk": {"S": "saved"}})["Item"]
        assert item["saved_value"]["S"] == "kept"
    _destroy("dev")
    secrets = d["client"]("secretsmanager")
    secrets.create_secret(Name="relay/dev/admin-token", SecretString="a-token-for-the-delete-data-run")
    _destroy("dev", "--delete-data")
    assert not {stack_name(s, "dev") for s in (*STACKS, "data")} & _live_stacks(cf)
    assert "relay-dev" not in ddb.list_tables()["TableNames"]
    names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    assert "relay/dev/admin-token" not in names, "deleted without a recovery window, so the name is free"


def test_destroy_without_delete_data_keeps_the_table(deployed):
    _destroy("prod")
    d = deployed["prod"]
    assert not {stack_name(s, "prod") for s in STACKS} & _live_stacks(d["client"]("cloudformation"))
    assert "relay-prod" in d["client"]("dynamodb").list_tables()["TableNames"]
