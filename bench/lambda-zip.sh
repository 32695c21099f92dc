#!/usr/bin/env bash
# Question: how big are the Lambda deployment packages? Builds the relay and the canary Lambda zips
# exactly as the deploy step does (cargo-lambda, release, arm64) and records their sizes, zipped and
# unzipped. cargo-lambda comes from PyPI into a cached virtualenv when missing. The first build
# cross-compiles everything: about 10 minutes on 2 cores. Writes bench/results/lambda-zip.md.
source "$(dirname "$0")/lib/common.sh"

need_cargo_lambda
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 \
  || { echo "cannot add the aarch64-unknown-linux-gnu target" >&2; exit 1; }

lambda_dir=$work/lambda
cargo lambda build --release --arm64 --output-format zip --lambda-dir "$lambda_dir" -p relay --bin relay
cargo lambda build --release --arm64 --output-format zip --lambda-dir "$lambda_dir" -p healthcheck --bin healthcheck-lambda

python3 - "$lambda_dir" "$(machine)" "$cargo_lambda_version" > bench/results/lambda-zip.md <<'PY'
import os, sys, zipfile
lambda_dir, machine, version = sys.argv[1:4]
print("# Lambda package sizes\n")
print(f"Measured {machine}. `bench/lambda-zip.sh`: cargo-lambda {version}, `cargo lambda build --release --arm64")
print("--output-format zip`, the workspace release profile (thin LTO); what `scripts/deploy.sh` uploads.\n")
print("| function | zip | unzipped `bootstrap` |\n|---|---:|---:|")
for name in ("relay", "healthcheck-lambda"):
    path = os.path.join(lambda_dir, name, "bootstrap.zip")
    unzipped = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    print(f"| {name} | {os.path.getsize(path) / 2**20:.1f} MiB | {unzipped / 2**20:.1f} MiB |")
print("\nLambda's limits: 50 MiB zipped for a direct upload, 250 MiB unzipped.")
PY
cat bench/results/lambda-zip.md
