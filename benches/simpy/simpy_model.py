"""GitLab Runner's docker+machine autoscaler as a SimPy model: the tool a capacity planner would
otherwise write. Same world as drover's simulator: Poisson arrivals into the coordinator's FIFO queue,
long polling (a free machine gets the next job at once), exponential job and boot times.

- Kept-idle machines (IdleCount of them, IdleCount <= limit): each boots, then takes queued jobs one
  after another until it has run MaxBuilds (0: no limit); then it is removed and a new one boots.
- The rest of `limit` is on-demand capacity: a free slot takes the next queued job, creates a machine
  for it, runs it and removes the machine (IdleTime 0).

Prints one JSON line: jobs, simulated and wall seconds, jobs per wall second, and the mean wait (job
arrival to the start of its script) with a standard error from batch means.

    python simpy_model.py --jobs 1000000 --rate-per-min 10 --service-min 1 --limit 12 --idle-count 12
"""

import argparse
import json
import random
import time

import simpy


class Waits:
    """Running sum of the waits, and the means of `batches` consecutive batches (for a standard error
    that does not assume the waits independent)."""

    def __init__(self, jobs, batches=20):
        self.per_batch = max(1, jobs // batches)
        self.n = 0
        self.total = 0.0
        self.batch = 0.0
        self.means = []

    def add(self, wait):
        self.n += 1
        self.total += wait
        self.batch += wait
        if self.n % self.per_batch == 0:
            self.means.append(self.batch / self.per_batch)
            self.batch = 0.0

    def mean_and_stderr(self):
        mean = self.total / self.n
        k = len(self.means)
        if k < 2:
            return mean, float("nan")
        m = sum(self.means) / k
        var = sum((x - m) ** 2 for x in self.means) / (k - 1)
        return mean, (var / k) ** 0.5


def model(env, args, rng, queue, waits, done):
    service = args.service_min * 60.0
    boot = args.boot_min * 60.0

    def sample_boot():
        return rng.expovariate(1.0 / boot) if boot > 0 else 0.0

    def run_job(arrived):
        waits.add(env.now - arrived)
        yield env.timeout(rng.expovariate(1.0 / service))
        done[0] += 1
        if done[0] == args.jobs:
            done[1].succeed()

    def kept_idle():
        while True:
            yield env.timeout(sample_boot())
            builds = 0
            while args.max_builds == 0 or builds < args.max_builds:
                arrived = yield queue.get()
                yield from run_job(arrived)
                builds += 1
            # Removed (instantly); the autoscaler boots a replacement to keep IdleCount.

    def on_demand():
        while True:
            arrived = yield queue.get()
            yield env.timeout(sample_boot())
            yield from run_job(arrived)
            # The machine is removed (instantly) and the slot is free again.

    def arrivals():
        rate = args.rate_per_min / 60.0
        for _ in range(args.jobs):
            yield env.timeout(rng.expovariate(rate))
            queue.put(env.now)

    for _ in range(args.idle_count):
        env.process(kept_idle())
    for _ in range(args.limit - args.idle_count):
        env.process(on_demand())
    env.process(arrivals())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--rate-per-min", type=float, required=True)
    p.add_argument("--service-min", type=float, required=True, help="mean job time (exponential)")
    p.add_argument("--boot-min", type=float, default=0.0, help="mean boot time (exponential)")
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--idle-count", type=int, default=0)
    p.add_argument("--max-builds", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if not 0 <= args.idle_count <= args.limit:
        p.error("IdleCount must be between 0 and limit")

    rng = random.Random(args.seed)
    env = simpy.Environment()
    queue = simpy.Store(env)
    waits = Waits(args.jobs)
    done = [0, env.event()]
    model(env, args, rng, queue, waits, done)
    start = time.perf_counter()
    env.run(until=done[1])
    wall = time.perf_counter() - start
    mean, stderr = waits.mean_and_stderr()
    print(
        json.dumps(
            {
                "jobs": done[0],
                "simulated_seconds": env.now,
                "wall_seconds": wall,
                "jobs_per_second": done[0] / wall,
                "mean_wait_seconds": mean,
                "mean_wait_stderr": stderr,
            }
        )
    )


if __name__ == "__main__":
    main()
