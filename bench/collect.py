"""Benchmark: the demo's offline collection (targets: <= 15 min in all, rollouts >= 4,000 steps/s).

Runs the `demo` profile's collection (behaviour policies trained with ARS into their
score bands, then each one's noisy rollouts) and prints both figures. The
reference is the same policy stepped through `gym.make`'s full wrapper stack,
the way a plain gymnasium script would, timed over 20,000 steps in the same run.
It also times 40 seeded episodes of the middle policy in one process against one
worker process per core (`worker_map`, which runs ARS's episodes and the rollouts).
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import time
import warnings
from pathlib import Path

from dtrepro.collect.ars import seeded_episode
from dtrepro.collect.collector import Noisy, collect
from dtrepro.collect.workers import worker_map
from dtrepro.params import CollectParams
from dtrepro.pipeline.named_runs import resolve
from dtrepro.runtime.threads import blas_core, usable_cpus

ROOT = Path(__file__).resolve().parents[1]
TOTAL_TARGET_S, RATE_TARGET = 15 * 60, 4000


def reference_rate(policy, env_id: str, steps: int = 20_000) -> float:
    # gymnasium loads numpy: imported here, after `dtrepro` has pinned numpy's BLAS kernels (dtrepro.runtime.threads),
    # so that the bench collects what the stage collects
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(policy(obs)[0])
        if terminated or truncated:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def worker_speedup(policy, params: CollectParams, episodes: int = 40) -> tuple[float, int]:
    """Episodes per second in one worker per core over those in one process (the same seeded episodes)."""
    jobs = [(params.env_id, params.max_episode_steps, policy, seed, 0.0, False) for seed in range(episodes)]
    seconds = {}
    for workers in (1, usable_cpus()):
        with worker_map(workers) as map_:
            list(map_(seeded_episode, jobs[: usable_cpus()]))  # start the workers and their envs
            start = time.perf_counter()
            list(map_(seeded_episode, jobs))
            seconds[workers] = time.perf_counter() - start
    return seconds[1] / seconds[usable_cpus()], usable_cpus()


def main() -> None:
    demo = resolve(ROOT, "demo", [])
    params = CollectParams.from_params(demo, demo["study"]["datasets"][0])
    start = time.perf_counter()
    data, behaviours, rate = collect(params)
    policies = list(behaviours.values())
    first, slowest = policies[0], max(policies, key=lambda b: b.env_steps)
    total = time.perf_counter() - start
    ref = reference_rate(Noisy(first.policy, params.action_noise, 0), params.env_id)
    print(
        f"demo collection: {data.rows:,} rows of {len(behaviours)} behaviour policies, the last found after "
        f"{slowest.env_steps:,} ARS steps (OpenBLAS kernels {blas_core()})"
    )
    print(f"total {total:.1f} s -> {'OK' if total <= TOTAL_TARGET_S else 'OVER'} against {TOTAL_TARGET_S} s")
    print(
        f"rollouts {rate:,.0f} steps/s -> {'OK' if rate >= RATE_TARGET else 'UNDER'} against {RATE_TARGET:,}; "
        f"gym.make wrapper-stack reference {ref:,.0f} steps/s ({rate / ref:.2f}x)"
    )
    speedup, workers = worker_speedup(policies[len(policies) // 2].policy, params)
    print(f"episodes in {workers} worker processes: {speedup:.2f}x those in one process")


if __name__ == "__main__":
    main()
