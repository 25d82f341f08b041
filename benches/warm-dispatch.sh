#!/bin/sh
# Where a step's start-up time goes on the local Docker engine (create, upload, start, log attach,
# per-job network and volume, against `exec` in a running container), and the executor's own
# `Executor::start` -> first script byte and on to the next step's first byte, cold (a container
# per step) and warm (the machine's pre-started build container, each step in a standby exec
# started ahead of it). Needs a
# Docker engine and busybox-static (the test image is built from it).
# Usage: sh benches/warm-dispatch.sh [rounds]   (default 40)
set -eu
cd "$(dirname "$0")/.."
DROVER_BENCH_N="${1:-40}" exec cargo run -q -p drover-docker --features testing --example dispatch_phases
