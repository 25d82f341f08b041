"""drover's simulator against a SimPy model of the same autoscaler, on the same workloads.

For each scenario: runs `drover simulate` (one replication, no plan) and simpy_model.py, prints
each one's jobs per second of CPU time (and of wall time), the ratio, and a sanity line: the two
models' mean waits must agree within noise (|difference| < 4 combined standard errors). With
`--floor` (run.sh passes drover's `floor` example), also the floor: the same random draws as
drover's simulator through a bare first-come-first-served recursion, with no autoscaler, no
coordinator and no event queue. No simulator whose results are drover's can beat it.

Run through run.sh, which installs SimPy into a virtualenv first.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name, drover config, drover workload, SimPy model arguments (the same parameters), floor model
SCENARIOS = [
    (
        "warm fleet M/M/12 (λ 10/min, job exp 1m)",
        "warm.config.toml",
        "warm.toml",
        ["--rate-per-min", "10", "--service-min", "1", "--limit", "12", "--idle-count", "12"],
        "warm",
    ),
    (
        "ephemeral pool (limit 4, boot exp 2m, MaxBuilds 1, λ 1/min)",
        "ephemeral.config.toml",
        "ephemeral.toml",
        ["--rate-per-min", "1", "--service-min", "1", "--boot-min", "2", "--limit", "4",
         "--max-builds", "1"],
        "ephemeral",
    ),
]


def erlang_c_wait(c, lam, mu):
    """Mean wait of an M/M/c queue (Erlang C)."""
    a = lam / mu
    term, total = 1.0, 0.0
    for k in range(c):
        total += term
        term *= a / (k + 1)
    top = term / (1 - a / c)
    return top / (total + top) / (c * mu - lam)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_drover(drover, config, workload):
    cmd = [drover, "simulate", "-c", os.path.join(HERE, config),
           "--workload", os.path.join(HERE, workload),
           "--replications", "1", "--no-plan", "--format", "json"]
    cpu0, wall0 = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - wall0
    doc = json.loads(out)
    jobs = doc["jobs"]["mean"] + doc["jobs_failed"]["mean"]
    return {
        "jobs": jobs,
        "cpu": cpu,
        "wall": wall,
        "mean_wait": doc["wait_seconds"]["mean"]["mean"],
        "peak_rss_mib": doc["perf"]["peak_rss_bytes"] / 2**20,
    }


def run_simpy(python, jobs, model_args):
    cmd = [python, os.path.join(HERE, "simpy_model.py"), "--jobs", str(jobs)] + model_args
    cpu0, wall0 = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - wall0
    doc = json.loads(out)
    return {
        "jobs": doc["jobs"],
        "cpu": cpu,
        "wall": wall,
        "mean_wait": doc["mean_wait_seconds"],
        "stderr": doc["mean_wait_stderr"],
    }


def run_floor(floor, which, jobs):
    cpu0 = children_cpu()
    subprocess.run([floor, which, str(jobs)], check=True, capture_output=True)
    return children_cpu() - cpu0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drover", default="target/release/drover")
    p.add_argument("--python", default=sys.executable, help="a Python with SimPy")
    p.add_argument("--floor", help="drover-sim's `floor` example, to print the floor too")
    args = p.parse_args()

    print("jobs/s are per second of CPU time (user + system) of the whole process; wall in brackets")
    worst = math.inf
    agree = True
    for name, config, workload, model_args, floor_model in SCENARIOS:
        d = run_drover(args.drover, config, workload)
        s = run_simpy(args.python, int(d["jobs"]), model_args)
        d_rate, s_rate = d["jobs"] / d["cpu"], s["jobs"] / s["cpu"]
        ratio = d_rate / s_rate
        worst = min(worst, ratio)
        print(f"\n{name}, {int(d['jobs']):,} jobs")
        print(f"  drover  {d_rate / 1e6:8.2f} M jobs/s  ({d['jobs'] / d['wall'] / 1e6:.2f} M/s wall)"
              f"  {d['cpu']:.2f} s CPU, peak RSS {d['peak_rss_mib']:.1f} MiB")
        print(f"  SimPy   {s_rate / 1e6:8.3f} M jobs/s  ({s['jobs'] / s['wall'] / 1e6:.3f} M/s wall)"
              f"  {s['cpu']:.2f} s CPU")
        print(f"  ratio   {ratio:8.1f}×")
        if args.floor:
            f_rate = d["jobs"] / run_floor(args.floor, floor_model, int(d["jobs"]))
            print(f"  floor   {f_rate / 1e6:8.2f} M jobs/s = {f_rate / s_rate:.0f}× SimPy: the same draws, "
                  "bare FCFS")
        # The same model twice: the means differ by sampling noise alone. drover's run is as long
        # as SimPy's, so its standard error is about the same.
        se = s["stderr"] * math.sqrt(2)
        diff = d["mean_wait"] - s["mean_wait"]
        ok = abs(diff) < 4 * se
        agree &= ok
        line = (f"  sanity  mean wait drover {d['mean_wait']:.2f} s, SimPy {s['mean_wait']:.2f} s "
                f"(± {se:.2f} s): {'agree' if ok else 'DISAGREE'}")
        if "M/M/12" in name:
            line += f"; Erlang C {erlang_c_wait(12, 10 / 60, 1 / 60):.2f} s"
        print(line)
    print(f"\nslowest ratio {worst:.1f}×; models {'agree' if agree else 'DISAGREE'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
