#!/bin/sh
# The random-point kill -9 measurement of issue #13: TRIALS trials (default 40) of 6 jobs each,
# MaxBuilds 1, IdleCount 2, drover killed -9 at a random moment and restarted, against the real
# Docker engine and the fake GitLab. Prints lost jobs, double final updates, runner_system_failure
# outcomes, jobs with duplicated script output and leaked objects; every trial that was not clean
# is printed with drover's log.
#
#   tools/kill9-trials.sh [TRIALS [SEED]]
#
# The same SEED gives the same kill points (what each point hits still depends on timing).
set -eu
cd "$(dirname "$0")/.."
export DROVER_KILL9_TRIALS="${1:-40}"
if [ -n "${2:-}" ]; then export DROVER_KILL9_SEED="$2"; fi
export CI=1
# --workspace --all-features: the feature set CI builds with, so nothing is rebuilt for it.
exec cargo test --workspace --all-features --locked --test it -- --ignored --exact daemon::kill9::kill_9_at_random_points --nocapture
