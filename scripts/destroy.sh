#!/usr/bin/env bash
# Tear an environment down: delete the observability, canary and app stacks (in that order, waiting for
# each). The data stack (the DynamoDB table and the admin token secret) survives by design: messages are
# user data, and a later deploy finds them where they were. Only --delete-data removes it, after you
# type the environment name (or pass --yes).
#
#   scripts/destroy.sh ENV [--delete-data] [--bootstrap] [--yes]
#
#   --delete-data  also delete the data stack: the table relay-ENV (deletion protection turned off;
#                  irreversible, point-in-time recovery backups go with it) and the admin token secret
#                  (without a recovery window, so its name is free for a new deploy)
#   --bootstrap    also delete the bootstrap stack (the artifact bucket is retained; empty and delete it
#                  by hand if you really mean it)
#   --yes          do not ask for confirmation
#
# Same tools and credentials as scripts/deploy.sh (AWS_ENDPOINT_URL redirects every call).
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

delete_data=false
with_bootstrap=false
assume_yes=false
while [ $# -gt 0 ]; do
  case "$1" in
    --delete-data) delete_data=true ;;
    --bootstrap) with_bootstrap=true ;;
    --yes) assume_yes=true ;;
    -h | --help) usage ;;
    *) fail "unknown option '$1'" ;;
  esac
  shift
done

venv=${RELAY_DEPLOY_VENV:-$root/.venv-deploy}
[ -n "${RELAY_DEPLOY_VENV:-}" ] || python_venv "$venv" -r infra/requirements-deploy.txt
[ -x "$venv/bin/aws" ] || fail "the AWS CLI is missing from $venv (pip install -r infra/requirements-deploy.txt)"
export PATH="$venv/bin:$PATH"
region=$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["region"])' \
  "infra/environments/$env_name.json")
export AWS_REGION=$region AWS_DEFAULT_REGION=$region

if ! $assume_yes; then
  what="the relay stacks of $env_name ($region)"
  $delete_data && what="$what AND ITS DATA (table relay-$env_name)"
  printf 'About to delete %s. Type the environment name to go on: ' "$what" >&2
  read -r answer
  [ "$answer" = "$env_name" ] || fail "not confirmed; nothing deleted"
fi

delete_stack() {
  step "Deleting $1"
  aws cloudformation delete-stack --stack-name "$1"
  aws cloudformation wait stack-delete-complete --stack-name "$1" || fail "$1 did not delete; see its events"
}

delete_stack "relay-observability-$env_name"
delete_stack "relay-canary-$env_name"
delete_stack "relay-app-$env_name"

table=relay-$env_name
secret=relay/$env_name/admin-token
if $delete_data; then
  # Both are retained by the data stack (DeletionPolicy Retain), so they are deleted here, by name.
  delete_stack "relay-data-$env_name"
  step "Deleting the table $table and the secret $secret"
  if aws dynamodb describe-table --table-name "$table" >/dev/null 2>&1; then
    aws dynamodb update-table --table-name "$table" --no-deletion-protection-enabled >/dev/null
    aws dynamodb delete-table --table-name "$table" >/dev/null
    aws dynamodb wait table-not-exists --table-name "$table"
  fi
  aws secretsmanager delete-secret --secret-id "$secret" --force-delete-without-recovery >/dev/null 2>&1 || true
else
  echo "destroy: kept the data stack relay-data-$env_name (table $table, secret $secret; --delete-data deletes them)" >&2
fi

if $with_bootstrap; then
  delete_stack "relay-bootstrap-$env_name"
fi
echo "destroy: done" >&2
