"""What the templates must say, read as data: least-privilege IAM (the relay role grants exactly the
DynamoDB actions the README lists and the relay's code calls; the canary may only PutMetricData into its
namespace), the issue's required settings (TTL, point-in-time recovery, log retention, API throttling and
access logs, arm64, the admin token from Secrets Manager), and environment files that fit the templates.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cfnlint
import pytest

import render
from conftest import ENVIRONMENTS, ROOT

# The relay's SDK calls -> the IAM actions they need. TransactWriteItems needs the actions of the writes
# inside it (Put/Update/Delete/ConditionCheck), nothing of its own.
SDK_CALL_ACTIONS = {
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "transact_write_items": set(),
    "transact_get_items": {"dynamodb:GetItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
}
TRANSACTION_PARTS = {
    ".put(": "dynamodb:PutItem",
    ".update(": "dynamodb:UpdateItem",
    ".delete(": "dynamodb:DeleteItem",
    ".condition_check(": "dynamodb:ConditionCheckItem",
}
# Files of the DynamoDB backend the serving relay runs; client.rs holds `relay create-table`.
# Every file of the DynamoDB store but client.rs, whose calls are `relay create-table`'s (the serving
# role does not need them).
RUNTIME_SOURCES = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "relay/src/store/dynamodb").glob("*.rs")
    if p.name != "client.rs"
)


def statements(role: dict) -> list[dict]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def readme_dynamodb_actions() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"The relay itself needs(.+?)`create-table` also needs", text, re.DOTALL)
    assert match, "README's DynamoDB section no longer lists the relay's actions"
    # `dynamodb:GetItem`, `PutItem`, ... and `Query` on the table ... and `Query` on `table/TABLE/index/...`
    names = re.findall(r"`(?:dynamodb:)?([A-Z][A-Za-z]+)`", match[1])
    return {f"dynamodb:{n}" for n in names}


def code_dynamodb_actions() -> set[str]:
    """The IAM actions the serving relay's SDK calls need, read from its source."""
    calls = "|".join(SDK_CALL_ACTIONS)
    actions: set[str] = set()
    for source in RUNTIME_SOURCES:
        text = (ROOT / source).read_text(encoding="utf-8")
        for call in re.findall(rf"\.\s*({calls})\(\)", text):
            actions |= SDK_CALL_ACTIONS[call]
        for part, action in TRANSACTION_PARTS.items():
            if re.search(r"TransactWriteItem::builder\(\)\s*" + re.escape(part), text):
                actions.add(action)
    return actions


def test_the_relay_role_grants_exactly_the_readme_actions_on_the_table_and_index(templates):
    role = templates["relay"]["Resources"]["RelayFunctionRole"]
    table, index = set(), set()
    for statement in statements(role):
        resource = statement["Resource"]
        actions = set(as_list(statement["Action"]))
        if resource == {"Ref": "TableArn"}:
            table |= actions
        elif resource == {"Fn::Sub": "${TableArn}/index/by_expiry"}:
            index |= actions
        elif resource == {"Ref": "AdminTokenSecretArn"}:
            assert actions == {"secretsmanager:GetSecretValue"}, f"the secret may only be read: {statement}"
        else:
            assert actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}, f"unexpected grant {statement}"
            assert resource == {"Fn::Sub": "${RelayLogGroup.Arn}"}
        assert statement["Effect"] == "Allow"
    assert table == readme_dynamodb_actions(), "the role's table actions differ from the README's list"
    assert index == {"dynamodb:Query"}


def test_the_relay_code_needs_exactly_what_the_role_grants(templates):
    needed = code_dynamodb_actions()
    assert {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem"} <= needed, f"parser found only {needed}"
    assert "dynamodb:Scan" not in needed, "no request path may Scan (DESIGN section 3)"
    granted = readme_dynamodb_actions()
    assert needed <= granted, f"the relay calls {sorted(needed - granted)} without a grant"
    assert granted <= needed, f"granted but never called (least privilege): {sorted(granted - needed)}"


def test_the_canary_may_only_put_metric_data_into_its_namespace(templates, canary_catalog):
    role = templates["canary"]["Resources"]["CanaryFunctionRole"]
    for statement in statements(role):
        actions = set(as_list(statement["Action"]))
        if actions == {"cloudwatch:PutMetricData"}:
            assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": canary_catalog["namespace"]}}
        else:
            assert actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}, statement
            assert statement["Resource"] == {"Fn::Sub": "${CanaryLogGroup.Arn}"}


def test_no_role_grants_wildcard_actions(templates):
    for name, template in templates.items():
        for logical, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            for statement in statements(resource):
                for action in as_list(statement["Action"]):
                    assert "*" not in action, f"{name}.{logical}: wildcard action {action}"


def test_the_data_stack_keeps_the_table_and_the_secret_whatever_happens_to_it(templates):
    resources = templates["data"]["Resources"]
    assert {r["Type"] for r in resources.values()} == {"AWS::DynamoDB::Table", "AWS::SecretsManager::Secret"}
    for logical, res in resources.items():
        assert res["DeletionPolicy"] == "Retain" and res["UpdateReplacePolicy"] == "Retain", logical
    assert not any(r["Type"] in ("AWS::DynamoDB::Table", "AWS::SecretsManager::Secret")
                   for name in ("relay", "canary") for r in templates[name]["Resources"].values())


def test_the_table_keeps_data_and_has_ttl_and_point_in_time_recovery(templates):
    table = templates["data"]["Resources"]["MessagesTable"]
    props = table["Properties"]
    assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    assert props["DeletionProtectionEnabled"] is True
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"]["Enabled"] is True
    assert props["TableName"] == {"Fn::Sub": "relay-${Env}"}


def test_every_log_group_has_retention_and_every_function_its_log_group(templates):
    for name, template in templates.items():
        resources = template["Resources"]
        for logical, res in resources.items():
            if res["Type"] == "AWS::Logs::LogGroup":
                assert "RetentionInDays" in res["Properties"], f"{name}.{logical}"
            if res["Type"] == "AWS::Lambda::Function":
                group = res["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
                assert resources[group]["Type"] == "AWS::Logs::LogGroup"


def test_functions_are_arm64_on_the_provided_runtime_with_reserved_concurrency(templates):
    for name in ("relay", "canary"):
        for res in templates[name]["Resources"].values():
            if res["Type"] == "AWS::Lambda::Function":
                props = res["Properties"]
                assert props["Architectures"] == ["arm64"]
                assert props["Runtime"] == "provided.al2023" and props["Handler"] == "bootstrap"
                assert "ReservedConcurrentExecutions" in props


def test_a_failed_canary_run_is_never_retried_late(templates):
    """EventBridge invokes the canary asynchronously; Lambda would retry a failed run twice, up to 6 hours
    later, queued behind its reserved concurrency: stale results published as new ones."""
    configs = [r for r in templates["canary"]["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert len(configs) == 1
    props = configs[0]["Properties"]
    assert props["FunctionName"] == {"Ref": "CanaryFunction"} and props["Qualifier"] == "$LATEST"
    assert props["MaximumRetryAttempts"] == 0 and props["MaximumEventAgeInSeconds"] == 60


def test_the_api_is_throttled_and_access_logged(templates):
    resources = templates["relay"]["Resources"]
    stage = resources["ApiStage"]["Properties"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(stage["DefaultRouteSettings"])
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    integration = resources["ApiIntegration"]["Properties"]
    assert integration["PayloadFormatVersion"] == "2.0"


def test_the_admin_token_is_read_from_secrets_manager_and_never_in_the_functions_configuration(templates):
    resources = templates["relay"]["Resources"]
    env = resources["RelayFunction"]["Properties"]["Environment"]["Variables"]
    # The ARN only: lambda:GetFunction shows the environment, so the value must never be in it.
    assert env["RELAY_ADMIN_TOKEN_SECRET"] == {"Ref": "AdminTokenSecretArn"}
    assert "RELAY_ADMIN_TOKEN" not in env
    assert not any("resolve:secretsmanager" in json.dumps(v) for v in env.values())
    assert templates["data"]["Resources"]["AdminTokenSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert env["RELAY_STORE"] == {"Fn::Sub": "dynamodb:${TableName}"}


def test_function_roles_carry_the_bootstrap_boundary_and_only_it_lets_them_be_made(templates):
    boundary = "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/relay-function-boundary-${Env}"
    for name, logical in (("relay", "RelayFunctionRole"), ("canary", "CanaryFunctionRole")):
        assert templates[name]["Resources"][logical]["Properties"]["PermissionsBoundary"] == {"Fn::Sub": boundary}
    bootstrap = templates["bootstrap"]["Resources"]
    assert bootstrap["FunctionBoundary"]["Properties"]["ManagedPolicyName"] == {
        "Fn::Sub": "relay-function-boundary-${Env}"
    }
    role = bootstrap["CloudFormationExecutionRole"]
    for statement in statements(role):
        actions = {a.lower() for a in as_list(statement["Action"])}
        if actions & {"iam:createrole", "iam:putrolepolicy", "iam:putrolepermissionsboundary", "iam:attachrolepolicy"}:
            assert statement["Condition"] == {
                "StringEquals": {"iam:PermissionsBoundary": {"Ref": "FunctionBoundary"}}
            }, f"IAM writes without the boundary condition: {statement}"
            assert "iam:attachrolepolicy" not in actions


def test_the_execution_role_may_touch_only_relay_log_groups_alarms_and_dashboards(templates):
    role = templates["bootstrap"]["Resources"]["CloudFormationExecutionRole"]
    for statement in statements(role):
        actions = {a.lower() for a in as_list(statement["Action"])}
        destructive = {a for a in actions if a in ("logs:deleteloggroup", "cloudwatch:deletealarms", "cloudwatch:deletedashboards")}
        if destructive:
            resources = json.dumps(statement["Resource"])
            assert '"*"' not in resources and "relay" in resources.lower(), f"{destructive} on {resources}"


def test_the_relay_environment_variables_are_flags_the_relay_knows(templates):
    config = (ROOT / "relay" / "src" / "config.rs").read_text(encoding="utf-8")
    env = templates["relay"]["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    otel = (ROOT / "telemetry-core" / "src" / "otel.rs").read_text(encoding="utf-8")
    for name in env:
        if name in ("RUST_LOG", "RELAY_ADMIN_TOKEN_REVISION"):
            continue  # RUST_LOG is tracing's; the revision only forces an update (see the template)
        if name.startswith("OTEL_"):
            # OpenTelemetry's standard variables, read by its SDK: the ones our exporter documents.
            assert f"`{name}`" in otel, f"{name} is not a variable telemetry-core/src/otel.rs documents"
            continue
        assert f'env = "{name}"' in config, f"{name} is not an environment variable of relay/src/config.rs"


def test_spans_are_exported_only_with_the_collector_layer_which_then_also_gets_x_ray_rights(templates):
    relay = templates["relay"]
    assert relay["Conditions"]["Traced"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OtelCollectorLayerArn"}, "none"]}]}
    assert relay["Parameters"]["OtelCollectorLayerArn"]["Default"] == "none"
    function = relay["Resources"]["RelayFunction"]["Properties"]
    no_value = {"Ref": "AWS::NoValue"}
    assert function["Layers"] == {"Fn::If": ["Traced", [{"Ref": "OtelCollectorLayerArn"}], no_value]}
    otel = {k: v for k, v in function["Environment"]["Variables"].items() if k.startswith("OTEL_")}
    assert set(otel) >= {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}
    for name, value in otel.items():
        assert value["Fn::If"][0] == "Traced" and value["Fn::If"][2] == no_value, f"{name} is set without the layer"
    # The collector layer's OTLP/HTTP receiver, in the sandbox.
    assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"]["Fn::If"][1] == "http://localhost:4318"
    policy = relay["Resources"]["RelayTracesPolicy"]
    assert policy["Condition"] == "Traced" and policy["Type"] == "AWS::IAM::RolePolicy"
    assert policy["Properties"]["RoleName"] == {"Ref": "RelayFunctionRole"}
    policy = policy["Properties"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    boundary = templates["bootstrap"]["Resources"]["FunctionBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(set(as_list(s["Action"])) == set(statement["Action"]) for s in boundary), "the boundary allows them"


def test_the_canary_environment_variables_are_flags_the_canary_knows(templates):
    config = (ROOT / "healthcheck" / "src" / "config.rs").read_text(encoding="utf-8")
    env = templates["canary"]["Resources"]["CanaryFunction"]["Properties"]["Environment"]["Variables"]
    for name in env:
        if name != "RUST_LOG":
            assert f'env = "{name}"' in config, f"{name} is not an environment variable of healthcheck/src/config.rs"


# Parameters scripts/deploy.sh wires from other stacks' outputs instead of the environment files.
WIRED = {
    "app": {"TableName", "TableArn", "AdminTokenSecretArn"},
    "canary": {"TargetUrl"},
    "observability": {"ApiId"},
}
STACK_TEMPLATE = {
    "bootstrap": "bootstrap", "data": "data", "app": "relay", "canary": "canary", "observability": "observability",
}


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_environment_files_fit_the_templates(env, environments, templates):
    config = environments[env]
    assert config["region"] == ENVIRONMENTS[env]
    assert set(config["stacks"]) == set(STACK_TEMPLATE)
    for stack, values in config["stacks"].items():
        params = templates[STACK_TEMPLATE[stack]]["Parameters"]
        unknown = set(values) - set(params)
        assert not unknown, f"{env}.{stack}: parameters the template does not have: {sorted(unknown)}"
        assert values["Env"] == env
        required = {k for k, p in params.items() if "Default" not in p}
        missing = required - set(values) - WIRED.get(stack, set())
        assert not missing, f"{env}.{stack}: required parameters nobody sets: {sorted(missing)}"
        for key, value in values.items():
            allowed = params[key].get("AllowedValues")
            if allowed:
                assert value in [str(a) for a in allowed], f"{env}.{stack}.{key}={value} not allowed"
    assert config["stacks"]["observability"]["PagingEnabled"] == ("true" if env == "prod" else "false")


def test_the_rendered_stack_holds_every_dashboard_and_alarm(templates, alarms_doc):
    resources = templates["observability"]["Resources"]
    dashboards = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert len(dashboards) == len(render.dashboard_files())
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == len(alarms_doc["alarms"]) + len(alarms_doc["slo_alarms"])
    composites = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"]
    assert len(composites) == len(alarms_doc["slo_composites"]) + 1


# ---- the CloudFormation execution role can do what CloudFormation will ask of it -------------------------

CFN_SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas"
# Handler permissions that only features these stacks do not use need (with the reason).
UNUSED_FEATURE_SERVICES = {
    "ec2": "no VPC",
    "elasticfilesystem": "no EFS",
    "s3files": "no S3 file mounts",
    "kms": "no customer managed keys",
    "kinesis": "no Kinesis streaming destination",
    "firehose": "no log delivery to Firehose",
}
UNUSED_FEATURE_ACTIONS = {
    # DynamoDB ImportTable, global-table replicas, contributor insights and resource policies are not used.
    "dynamodb:importtable", "dynamodb:batchwriteitem", "dynamodb:putitem",
    "dynamodb:getitem", "dynamodb:deleteitem", "dynamodb:updateitem", "dynamodb:query", "dynamodb:scan",
    "dynamodb:createtablereplica", "dynamodb:associatetablereplica",
    "dynamodb:enablekinesisstreamingdestination", "dynamodb:disablekinesisstreamingdestination",
    "dynamodb:updatekinesisstreamingdestination", "dynamodb:putresourcepolicy", "dynamodb:deleteresourcepolicy",
    "iam:createservicelinkedrole", "s3:getobjectmetadata", "s3:listbucket", "logs:createlogstream",
    "logs:describelogstreams", "logs:putlogevents",
    # Lambda capacity providers, runtime aliases, versions and code signing are not used.
    "lambda:passcapacityprovider", "lambda:associateruntimealias", "lambda:publishversion",
    "lambda:putfunctioncodesigningconfig", "lambda:deletefunctioncodesigningconfig",
    "lambda:putfunctionscalingconfig",
    # The function roles carry inline policies only, and their boundary is never removed.
    "iam:attachrolepolicy", "iam:deleterolepermissionsboundary",
    # Log groups: no data protection, index policies, KMS, deletion protection or bearer tokens.
    "logs:putdataprotectionpolicy", "logs:deletedataprotectionpolicy", "logs:putindexpolicy",
    "logs:deleteindexpolicy", "logs:associatekmskey", "logs:disassociatekmskey",
    "logs:putloggroupdeletionprotection", "logs:putbearertokenauthentication", "s3:rest.put.object",
    # Secrets are not replicated; SNS topics have no data protection policy.
    "secretsmanager:replicatesecrettoregions", "secretsmanager:removeregionsfromreplication",
    "sns:putdataprotectionpolicy",
    # API Gateway tags through apigateway:PUT/DELETE on /tags (IAM has no apigateway:TagResource).
    "apigateway:tagresource", "apigateway:untagresource",
}


# Needed beyond the resource schemas: API Gateway sets up the log delivery of a stage's access logs with
# the caller's permissions (AWS, "Configuring logging for an HTTP API").
EXTRA_NEEDED = {
    "AWS::ApiGatewayV2::Stage": {
        "logs:createlogdelivery", "logs:getlogdelivery", "logs:updatelogdelivery", "logs:deletelogdelivery",
        "logs:listlogdeliveries", "logs:putresourcepolicy", "logs:describeresourcepolicies",
        "logs:describeloggroups",
    },
}


def handler_permissions(resource_type: str) -> set[str]:
    index = json.loads((CFN_SCHEMAS / "providers" / "us-east-1.json").read_text())
    schema = json.loads((CFN_SCHEMAS / "resources" / f"{index[resource_type]}.json").read_text())
    out: set[str] = set()
    for handler in ("create", "read", "update", "delete"):
        out |= {p.lower() for p in schema.get("handlers", {}).get(handler, {}).get("permissions", [])}
    out = {p for p in out if p.split(":")[0] not in UNUSED_FEATURE_SERVICES and p not in UNUSED_FEATURE_ACTIONS}
    return out | EXTRA_NEEDED.get(resource_type, set())


def test_the_cloudformation_execution_role_may_do_what_the_resource_handlers_call(templates):
    """Every permission CloudFormation's handlers need for the stacks' resource types (per the resource
    schemas cfn-lint ships) is granted, so a first real deploy cannot die on AccessDenied."""
    role = templates["bootstrap"]["Resources"]["CloudFormationExecutionRole"]
    granted = {a.lower() for s in statements(role) for a in as_list(s["Action"])}
    types = {
        r["Type"] for name in ("data", "relay", "canary", "observability") for r in templates[name]["Resources"].values()
    }
    missing = {t: sorted(handler_permissions(t) - granted) for t in sorted(types)}
    missing = {t: m for t, m in missing.items() if m}
    assert not missing, "the execution role lacks:\n" + "\n".join(f"{t}: {m}" for t, m in missing.items())
    needed = set().union(*(handler_permissions(t) for t in types)) | {"s3:getobject", "s3:getobjectversion"}
    extra = granted - needed
    assert not extra, f"granted but no handler needs it (least privilege): {sorted(extra)}"


def test_the_execution_role_may_create_every_alarm_and_dashboard_the_stack_holds(templates):
    """A name outside the role's resource patterns deploys in no account: CloudFormation is refused."""
    import fnmatch

    role = templates["bootstrap"]["Resources"]["CloudFormationExecutionRole"]
    patterns = {"alarm": [], "dashboard": []}
    for statement in statements(role):
        actions = {a.lower() for a in as_list(statement["Action"])}
        for resource in as_list(statement["Resource"]):
            arn = resource["Fn::Sub"] if isinstance(resource, dict) else resource
            if "cloudwatch:putmetricalarm" in actions and "cloudwatch:putcompositealarm" in actions:
                patterns["alarm"].append(arn.split(":alarm:")[-1])
            if "cloudwatch:putdashboard" in actions:
                patterns["dashboard"].append(arn.split(":dashboard/")[-1])
    assert patterns["alarm"] and patterns["dashboard"]
    for res in templates["observability"]["Resources"].values():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
            name, kind = props["AlarmName"]["Fn::Sub"], "alarm"
        elif res["Type"] == "AWS::CloudWatch::Dashboard":
            name, kind = props["DashboardName"]["Fn::Sub"], "dashboard"
        else:
            continue
        assert any(fnmatch.fnmatchcase(name, p) for p in patterns[kind]), f"{name}: outside {patterns[kind]}"


def test_the_deploy_role_may_do_what_the_bake_rollback_and_report_call(templates):
    """infra/release.py and slos/report.py run in the deploy jobs with the GitHub deploy role: every AWS
    call they make must be an action that role grants."""
    role = templates["bootstrap"]["Resources"]["GitHubDeployRole"]
    granted = {a.lower() for st in statements(role) for a in as_list(st["Action"])}
    services = {"cf": "cloudformation", "s3": "s3", "cw": "cloudwatch", "client": "cloudwatch"}
    special = {"s3:headobject": "s3:getobject"}
    needed = set()
    for path in (ROOT / "infra" / "release.py", ROOT / "slos" / "report.py"):
        text = path.read_text(encoding="utf-8")
        for var, method in re.findall(r"\b(cf|s3|cw|client)\.(\w+)\(", text):
            if method == "get_paginator" or method == "get_waiter" or method == "exceptions":
                continue
            needed.add(f"{services[var]}:{method.replace('_', '')}")
        needed |= {f"cloudwatch:{m.replace('_', '')}" for m in re.findall(r'get_paginator\("(\w+)"', text)}
        if 'get_waiter("stack_update_complete")' in text:
            needed.add("cloudformation:describestacks")
        if 'boto3.client("cloudformation").describe_stacks' in text:
            needed.add("cloudformation:describestacks")
    needed = {special.get(a, a) for a in needed}
    assert {"cloudformation:updatestack", "cloudwatch:getmetricdata", "s3:putobject"} <= needed, needed
    assert needed <= granted, f"the deploy role lacks {sorted(needed - granted)}"
