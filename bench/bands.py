"""Benchmark: how many ARS steps the demo's collection takes to each score band, for several collect seeds.

For each `collect.seed` the demo's behaviour search (`train_behaviour`, the first policy ARS meets in each
band of `collect.mixed_bands`, in whatever order, a fresh ARS run after every `collect.restart_steps`)
runs on its own, and the benchmark prints the env steps of training to each band (all runs counted, and
the run that found it when it was not the first), the score and spread of the policy found there, and the
wall time. The step
counts do not depend on the machine's load (the search is fixed by its seed), only on the processor and
library builds. Target: for every seed, every band is reached within half of `collect.max_steps`.
Exits 1 if not.

    python bench/bands.py [--seeds 0,1,2,3,4] [-S collect.key=value ...]
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import argparse
import sys
import time
from pathlib import Path

from dtrepro.collect.collector import train_behaviour
from dtrepro.collect.workers import worker_map
from dtrepro.params import CollectParams
from dtrepro.pipeline.named_runs import resolve
from dtrepro.registry.scores import normalized_score
from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.threads import blas_core

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.5  # the slowest seed may use at most this share of collect.max_steps


def search(params: CollectParams) -> tuple[list, float, str]:
    """The behaviours found for each band, the wall time, and the error if the budget ran out."""
    start = time.perf_counter()
    try:
        with worker_map() as map_:
            found = train_behaviour(params, [tuple(b) for b in params.mixed_bands], None, map_)
        return found, time.perf_counter() - start, ""
    except DtreproError as error:
        return [], time.perf_counter() - start, str(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("-S", "--set", action="append", default=[], help="a demo param, as in dtrepro run -S")
    args = parser.parse_args()
    demo = resolve(ROOT, "demo", args.set)
    dataset = demo["study"]["datasets"][0]
    worst = 0
    collect = demo["collect"]
    print(
        f"bands {collect['mixed_bands']}, collect.max_spread {collect['max_spread']:g}, collect.max_steps "
        f"{collect['max_steps']:,}, collect.restart_steps {collect['restart_steps']:,}; OpenBLAS kernels "
        f"{blas_core()}; {' '.join(args.set)}"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        demo["collect"]["seed"] = seed
        params = CollectParams.from_params(demo, dataset)
        found, seconds, error = search(params)
        if error:
            print(f"seed {seed}: RAN OUT after {seconds:.0f} s: {error}", flush=True)
            worst = max(worst, params.max_steps)
            continue
        cells = []
        for (low, high), b in zip(params.mixed_bands, found, strict=True):
            scores = normalized_score(b.returns, params.env_id)
            run = f" (run {b.run})" if b.run else ""
            cells.append(f"[{low:g},{high:g}] {b.env_steps:>9,} steps{run}, {scores.mean():5.1f} ± {scores.std():4.1f}")
        print(f"seed {seed}: " + " | ".join(cells) + f" | {seconds:.0f} s", flush=True)
        worst = max(worst, *(b.env_steps for b in found))
    limit = MARGIN * params.max_steps
    verdict = "OK" if worst <= limit else "OVER"
    print(f"slowest seed: {worst:,} steps -> {verdict} against {limit:,.0f} ({MARGIN:g} of collect.max_steps)")
    sys.exit(0 if verdict == "OK" else 1)


if __name__ == "__main__":
    main()
