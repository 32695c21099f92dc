#!/usr/bin/env bash
# Deploy the relay to one environment: build the two Lambda zips (cargo-lambda, arm64), render the
# observability stack, then `aws cloudformation package` + `deploy` the app, canary and observability
# stacks in that order, wiring each stack's outputs into the next. Every packaged template is also kept
# in the artifact bucket under releases/<env>/<release>/, so a rollback redeploys them without building.
#
#   scripts/deploy.sh ENV [--bootstrap] [--skip-build | --zips DIR] [--release NAME] [--bake SECONDS]
#   scripts/deploy.sh ENV --rollback RELEASE
#
#   ENV            dev (us-west-2) or prod (us-east-1); parameters come from infra/environments/ENV.json
#   --bootstrap    also create/update the bootstrap stack (artifact bucket, OIDC deploy role): once per
#                  account and environment, with administrator credentials
#   --skip-build   use the zips already in target/lambda/ (from an earlier build)
#   --zips DIR     use DIR/relay.zip and DIR/healthcheck-lambda.zip instead of building
#   --release NAME name this release (default: the git commit, with -dirty for uncommitted changes)
#   --rollback REL redeploy the packaged templates of an earlier release REL (no build, no package): the
#                  app, canary and observability stacks, parameters unchanged (infra/release.py rollback);
#                  the data stack is state and is never rolled back
#   --bake SECONDS after deploying, watch the paging alarms, the SLO page tiers and the canary this long
#                  (default: 600 in prod, 0 in dev, whose deploy workflow gates on its canary instead).
#                  A page during the bake, or two failed canary runs, redeploy the last release that
#                  baked clean and exit 4 ("rolled back to <release>"); 3 when there is none to go back
#                  to. A clean bake records this release as the last good one (infra/release.py bake).
#
# Alarm and page subscribers: RELAY_ALARM_EMAIL and RELAY_PAGE_EMAIL (the observability stack's AlarmEmail
# and PageEmail). An environment that pages (PagingEnabled true, prod) refuses to deploy without a page
# subscriber.
# Credentials and the account come from the standard AWS chain (OIDC in CI). With AWS_ENDPOINT_URL set,
# every call goes to that endpoint instead (a local AWS-API server; see infra/tests/test_moto_deploy.py
# for what moto 5.2.5 can and cannot run of this script).
# Tools: the AWS CLI and PyYAML from RELAY_DEPLOY_VENV (default .venv-deploy, created from
# infra/requirements-deploy.txt when missing); cargo-lambda is added there when building.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source=scripts/lib.sh
source scripts/lib.sh


[ $# -ge 1 ] || usage
env_name=$1
shift
case "$env_name" in
  dev | prod) ;;
  -h | --help) usage ;;
  *) fail "unknown environment '$env_name' (dev or prod)" ;;
esac

bootstrap=false
build=true
zips_dir=""
release=""
rollback=""
bake=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) bootstrap=true ;;
    --skip-build) build=false ;;
    --zips) [ $# -ge 2 ] || usage; zips_dir=$2; build=false; shift ;;
    --release) [ $# -ge 2 ] || usage; release=$2; shift ;;
    --rollback) [ $# -ge 2 ] || usage; rollback=$2; build=false; shift ;;
    --bake) [ $# -ge 2 ] || usage; bake=$2; shift ;;
    -h | --help) usage ;;
    *) fail "unknown option '$1'" ;;
  esac
  shift
done

case "${bake:-default}" in
  default) bake=$([ "$env_name" = prod ] && echo 600 || echo 0) ;;
  *[!0-9]*) fail "--bake takes whole seconds, not '$bake'" ;;
esac

# ---- tools -------------------------------------------------------------------------------------------
venv=${RELAY_DEPLOY_VENV:-$root/.venv-deploy}
# A venv named by RELAY_DEPLOY_VENV is its owner's (the ops checks pass theirs); .venv-deploy is ours.
[ -n "${RELAY_DEPLOY_VENV:-}" ] || python_venv "$venv" -r infra/requirements-deploy.txt
[ -x "$venv/bin/aws" ] || fail "the AWS CLI is missing from $venv (pip install -r infra/requirements-deploy.txt)"
export PATH="$venv/bin:$PATH" PYTHONDONTWRITEBYTECODE=1
py="$venv/bin/python"

env_file=infra/environments/$env_name.json
[ -f "$env_file" ] || fail "missing $env_file"
region=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["region"])' "$env_file")
export AWS_REGION=$region AWS_DEFAULT_REGION=$region

# A stack that pages must page someone: checked here, before anything is built, and by the stack's Rules.
paging=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["stacks"]["observability"].get("PagingEnabled", "false"))' "$env_file")
if [ "$paging" = true ] && [ -z "${RELAY_PAGE_EMAIL:-}" ]; then
  fail "$env_name pages (PagingEnabled true in $env_file) but RELAY_PAGE_EMAIL is empty: pages would reach nobody. Set it to on-call's address or a pager's e-mail gateway."
fi

# `Key=Value` arguments for --parameter-overrides, from the environment file plus extra pairs.
params() {
  "$py" - "$env_file" "$@" <<'PY'
import json, sys
env_file, stack, *extra = sys.argv[1:]
values = json.load(open(env_file))["stacks"][stack]
for pair in extra:
    key, _, value = pair.partition("=")
    values[key] = value
print("\n".join(f"{key}={value}" for key, value in values.items()))
PY
}

output() { # output STACK KEY
  aws cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text
}

deploy_stack() { # deploy_stack STACK TEMPLATE PARAMS...
  local stack=$1 template=$2
  shift 2
  local overrides
  mapfile -t overrides < <(params "$@")
  step "Deploying $stack"
  aws cloudformation deploy --stack-name "$stack" --template-file "$template" \
    --s3-bucket "$bucket" --s3-prefix "$stack" --role-arn "$exec_role" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --tags service=relay "env=$env_name" "release=$release" \
    --parameter-overrides "${overrides[@]}" >&2
}

data_stack=relay-data-$env_name
app_stack=relay-app-$env_name
canary_stack=relay-canary-$env_name
obs_stack=relay-observability-$env_name
bootstrap_stack=relay-bootstrap-$env_name

echo "deploy: environment $env_name, region $region${AWS_ENDPOINT_URL:+, endpoint $AWS_ENDPOINT_URL}" >&2
aws sts get-caller-identity --query Account --output text >/dev/null \
  || fail "no usable AWS credentials (aws sts get-caller-identity failed)"

# ---- bootstrap ---------------------------------------------------------------------------------------
if $bootstrap; then
  step "Deploying $bootstrap_stack"
  # One GitHub OIDC provider per account: when another environment's bootstrap made it, this one uses it.
  oidc=()
  account=$(aws sts get-caller-identity --query Account --output text)
  if ! aws cloudformation describe-stack-resource --stack-name "$bootstrap_stack" \
         --logical-resource-id GitHubOidcProvider >/dev/null 2>&1 \
     && aws iam get-open-id-connect-provider --open-id-connect-provider-arn \
         "arn:aws:iam::$account:oidc-provider/token.actions.githubusercontent.com" >/dev/null 2>&1; then
    echo "deploy: the account already has GitHub's OIDC provider; $bootstrap_stack uses it" >&2
    oidc=(CreateOidcProvider=false)
  fi
  mapfile -t overrides < <(params bootstrap "${oidc[@]}")
  aws cloudformation deploy --stack-name "$bootstrap_stack" --template-file infra/bootstrap.yaml \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --tags service=relay "env=$env_name" --parameter-overrides "${overrides[@]}" >&2
fi
bucket=$(output "$bootstrap_stack" ArtifactBucketName 2>/dev/null || true)
exec_role=$(output "$bootstrap_stack" CloudFormationExecutionRoleArn 2>/dev/null || true)
[ -n "$bucket" ] && [ "$bucket" != None ] \
  || fail "no $bootstrap_stack stack: run once with --bootstrap (administrator credentials)"

stage=$root/target/infra/$env_name

if [ -n "$rollback" ]; then
  # ---- rollback: the packaged templates of an earlier release ------------------------------------------
  step "Rolling $env_name back to release $rollback"
  "$py" infra/release.py rollback --env "$env_name" --bucket "$bucket" --release "$rollback" \
    --role-arn "$exec_role" >&2 || fail "the rollback to $rollback did not complete (see above)"
  step "Rolled $env_name back to release $rollback"
  cat <<DONE
environment: $env_name ($region)
release:     $rollback
api_url:     $(output "$app_stack" ApiUrl)
DONE
  exit 0
else
  # ---- build -------------------------------------------------------------------------------------------
  if [ -z "$release" ]; then
    release=${GITHUB_SHA:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
    release=${release:0:12}
    if [ -z "${GITHUB_SHA:-}" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
      release=$release-dirty
    fi
  fi
  rm -rf "$stage" && mkdir -p "$stage/infra" "$stage/target/lambda/relay" "$stage/target/lambda/healthcheck-lambda" "$stage/packaged"
  if $build; then
    step "Building the Lambda zips (cargo lambda build --release --arm64)"
    if ! command -v cargo-lambda >/dev/null; then
      "$venv/bin/pip" install --quiet --disable-pip-version-check cargo-lambda==1.9.2 >&2 \
        || fail "pip could not install cargo-lambda"
    fi
    rustup target add aarch64-unknown-linux-gnu >&2 || fail "cannot add the aarch64-unknown-linux-gnu target"
    cargo lambda build --release --arm64 --output-format zip -p relay --bin relay >&2
    cargo lambda build --release --arm64 --output-format zip -p healthcheck --bin healthcheck-lambda >&2
  fi
  if [ -n "$zips_dir" ]; then
    cp "$zips_dir/relay.zip" "$stage/target/lambda/relay/bootstrap.zip"
    cp "$zips_dir/healthcheck-lambda.zip" "$stage/target/lambda/healthcheck-lambda/bootstrap.zip"
  else
    for bin in relay healthcheck-lambda; do
      [ -f "target/lambda/$bin/bootstrap.zip" ] || fail "target/lambda/$bin/bootstrap.zip is missing: build first (drop --skip-build)"
      cp "target/lambda/$bin/bootstrap.zip" "$stage/target/lambda/$bin/bootstrap.zip"
    done
  fi
  # The templates name their zips as ../target/lambda/<bin>/bootstrap.zip; staged side by side, the
  # same relative paths find the zips chosen above.
  cp infra/data.yaml infra/relay.yaml infra/canary.yaml "$stage/infra/"
  "$py" infra/render.py --out "$stage/infra/observability.yaml" >/dev/null

  step "Packaging (aws cloudformation package -> s3://$bucket)"
  for name in data relay canary observability; do
    aws cloudformation package --template-file "$stage/infra/$name.yaml" --s3-bucket "$bucket" \
      --s3-prefix "artifacts/$env_name" --output-template-file "$stage/packaged/$name.yaml" >&2
  done
  aws s3 cp --only-show-errors --recursive "$stage/packaged/" "s3://$bucket/releases/$env_name/$release/" >&2
  packaged=$stage/packaged
fi

# ---- deploy, in dependency order -----------------------------------------------------------------------
# The data stack first: it outlives the others (scripts/destroy.sh keeps it), so after a destroy it is
# still there and this only updates it. A table still owned by an app stack of before the data stack
# existed must be imported into the data stack first (docs/OPERATIONS.md, "Moving the table").
if aws cloudformation describe-stack-resource --stack-name "$app_stack" --logical-resource-id MessagesTable \
     >/dev/null 2>&1; then
  fail "$app_stack still owns the table: import it into $data_stack first (docs/OPERATIONS.md, \"Moving the table\")"
fi
deploy_stack "$data_stack" "$packaged/data.yaml" data
deploy_stack "$app_stack" "$packaged/relay.yaml" app \
  "TableName=$(output "$data_stack" TableName)" "TableArn=$(output "$data_stack" TableArn)" \
  "AdminTokenSecretArn=$(output "$data_stack" AdminTokenSecretArn)"
api_url=$(output "$app_stack" ApiUrl)
api_id=$(output "$app_stack" ApiId)
deploy_stack "$canary_stack" "$packaged/canary.yaml" canary "TargetUrl=$api_url"
deploy_stack "$obs_stack" "$packaged/observability.yaml" observability "ApiId=$api_id" \
  "AlarmEmail=${RELAY_ALARM_EMAIL:-}" "PageEmail=${RELAY_PAGE_EMAIL:-}"

step "Deployed release $release to $env_name"
if [ "$bake" -gt 0 ]; then
  step "Baking release $release for $bake s"
  status=0
  "$py" infra/release.py bake --env "$env_name" --bucket "$bucket" --release "$release" \
    --seconds "$bake" --role-arn "$exec_role" >&2 || status=$?
  case $status in
    0) ;;
    4) echo "deploy: release $release failed its bake and was rolled back (see above)" >&2; exit 4 ;;
    *) fail_status=$status; fail "release $release failed its bake (status $status, see above)" ;;
  esac
fi
cat <<DONE
environment: $env_name ($region)
release:     $release
api_url:     $api_url
dashboard:   $(output "$obs_stack" DashboardUrl)
rollback:    scripts/deploy.sh $env_name --rollback <earlier release>   (releases: aws s3 ls s3://$bucket/releases/$env_name/)
DONE
