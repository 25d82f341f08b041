#!/bin/sh
# What the `aws` cargo feature (the AWS SDK for Rust) adds to a release build of the drover binary:
# a clean release build without it, then the build with it in the same target directory (the SDK
# crates and drover rebuilt with the provider). Prints both wall-clock times and the load average,
# since a busy machine stretches both. Usage: sh benches/aws-build-time.sh [target dir]
set -eu
cd "$(dirname "$0")/.."
target="${1:-target/aws-build-time}"
rm -rf "$target"
export CARGO_TARGET_DIR="$target"
start=$(date +%s)
cargo build --release --locked --no-default-features
without=$(($(date +%s) - start))
start=$(date +%s)
cargo build --release --locked
extra=$(($(date +%s) - start))
echo "release build without aws: ${without} s; the aws feature adds: ${extra} s; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
