#!/bin/sh
# drover's simulator against a SimPy model of the same autoscaler (see compare.py):
#   sh benches/simpy/run.sh
# Builds drover and the floor example (release), installs SimPy from PyPI into a virtualenv
# under target/, runs both.
set -eu
cd "$(dirname "$0")/../.."
venv=target/simpy-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check 'simpy==4.1.2'
cargo build --release --quiet --bin drover
cargo build --release --quiet -p drover-sim --example floor
exec "$venv/bin/python" benches/simpy/compare.py --drover target/release/drover \
    --floor target/release/examples/floor "$@"
