"""Benchmark: a training step alone and beside other work, with the project's thread settings and torch's.

The train stage's own loop (`train`, ms/step from its log's throughput) for a preset (default: the
`demo` one), in a fresh process per measurement so that OpenMP starts with the settings under test:
- `project`: what the stages use (`dtrepro.runtime.threads`: a thread per usable CPU, chosen once, and a
  short spin of 1,000 before a waiting worker sleeps);
- `torch`: torch's own defaults (a thread per core, GNU OpenMP's spin of 300,000);
- and, with `--all`, one thread, and two threads with `OMP_WAIT_POLICY=PASSIVE`; with `--spins 3000,10000`,
  a thread per usable CPU with each of those spin counts.
Each runs alone, beside a busy one-thread torch matmul loop, beside a plain Python busy loop, and
beside a second training with the same settings (as `dvc queue start -j 2` or two Slurm tasks on one
node run them); the benchmark starts and stops those processes itself.
Targets on a 2-core machine: beside one busy process, the project's step takes at most 2x its time
alone; alone, it is at most 1.2x torch's defaults.

    python bench/threads.py [--presets demo,paper,smoke] [--all] [--rounds 5] [--steps 150] [--spins 3000]
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dtrepro.runtime.threads import thread_settings, usable_cpus

from common import HOPPER, clean_hopper_file, preset_params

ROOT = Path(__file__).resolve().parents[1]
ROWS, K = 200_000, 20
STEPS = {"demo": 60, "paper": 30, "smoke": 200}
GNU_DEFAULT_SPIN = "300000"  # GNU OpenMP's spin count when no wait policy is set
TIMEOUT_S = 300
LOADS = {
    "alone": None,
    "a busy one-thread torch loop": "import torch\ntorch.set_num_threads(1)\nx = torch.randn(256, 256)\n"
    "while True:\n    x @ x",
    "a Python busy loop": "while True:\n    pass",
    "a second training": "second",
}


def settings(name: str) -> dict[str, str]:
    """The environment a measured process starts with: OpenMP's settings under test, nothing else of ours."""
    ours = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
    base = {k: v for k, v in os.environ.items() if k not in ours}
    cpus = str(usable_cpus())
    if name.startswith("spin="):  # an exploration: a thread per usable CPU with that spin count
        return {**base, "OMP_NUM_THREADS": cpus, "GOMP_SPINCOUNT": name[5:], "TQDM_DISABLE": "1"}
    chosen = {
        "project": thread_settings(),
        "torch": {"OMP_NUM_THREADS": cpus, "GOMP_SPINCOUNT": GNU_DEFAULT_SPIN},
        "1 thread": {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": GNU_DEFAULT_SPIN},
        "passive": {"OMP_NUM_THREADS": cpus, "OMP_WAIT_POLICY": "PASSIVE"},
    }[name]
    return {**base, **chosen, "TQDM_DISABLE": "1"}


def child(preset: str, steps: int, data: Path, out: Path) -> None:
    """Train `steps` steps of `preset` and print the median ms/step of the log's windows after the first."""
    from dtrepro.params import Run
    from dtrepro.training.loop import train

    params = preset_params(preset, steps=steps, log_every=10, eval_every=10**9, checkpoint_every=10**9)
    train(params, Run(K, 0), data, out / "models", out / "log.tsv", out / "train.json", dataset=HOPPER)
    with open(out / "log.tsv") as f:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f, delimiter="\t") if r["samples_per_s"]]
    rates = sorted(rates[1:])
    print(f"MS_PER_STEP {1e3 * params.batch_size / rates[len(rates) // 2]:.3f}")


def start_training(preset: str, steps: int, config: str, data: Path, tmp: Path, tag: str) -> subprocess.Popen:
    out = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=tmp))
    cmd = [sys.executable, __file__, "--child", preset, str(steps), str(data), str(out)]
    return subprocess.Popen(cmd, env=settings(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen, started: float) -> float:
    """ms/step of a finished measurement; past the time-out, the time so far over the steps (a lower bound)."""
    try:
        out, err = proc.communicate(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return float("inf")
    lines = [line for line in out.splitlines() if line.startswith("MS_PER_STEP")]
    if proc.returncode or not lines:
        raise SystemExit(f"a measurement failed:\n{out}\n{err}")
    return float(lines[-1].split()[1])


def measure(preset: str, steps: int, config: str, load: str, data: Path, tmp: Path) -> float:
    """ms/step of one training with `config` beside `load` (for a second training: the mean of the two)."""
    background = None
    if LOADS[load] not in (None, "second"):
        background = subprocess.Popen(
            [sys.executable, "-c", LOADS[load]], env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL
        )
        time.sleep(1.0)
    try:
        started = time.monotonic()
        runs = [start_training(preset, steps, config, data, tmp, "a")]
        if LOADS[load] == "second":
            runs.append(start_training(preset, steps, config, data, tmp, "b"))
        times = [result(p, started) for p in runs]
    finally:
        if background is not None:
            background.kill()
            background.wait()
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo", help="comma-separated named runs (demo, paper, smoke)")
    parser.add_argument("--all", action="store_true", help="also one thread and the PASSIVE wait policy")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the measurements alone")
    parser.add_argument("--steps", type=int, help=f"training steps per measurement (default: {STEPS})")
    parser.add_argument("--spins", default="", help="comma-separated GNU OpenMP spin counts to measure besides")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, steps, data, out = args.child
        child(preset, int(steps), Path(data), Path(out))
        return
    configs = ["project", "torch"] + (["1 thread", "passive"] if args.all else [])
    configs += [f"spin={n}" for n in args.spins.split(",") if n]
    print(f"usable CPUs here: {usable_cpus()}; the project's settings: {thread_settings()}")
    with tempfile.TemporaryDirectory() as tmp:
        data, _ = clean_hopper_file(Path(tmp), ROWS)
        for preset in args.presets.split(","):
            steps = args.steps or STEPS[preset]
            # alone, the settings alternate over several rounds (this machine's speed drifts): the medians
            alone = {c: [] for c in configs}
            for _ in range(args.rounds):
                for c in configs:
                    alone[c].append(measure(preset, steps, c, "alone", data, Path(tmp)))
            table = {(c, "alone"): statistics.median(alone[c]) for c in configs}
            table |= {
                (c, load): measure(preset, steps, c, load, data, Path(tmp))
                for load in LOADS
                if LOADS[load]
                for c in configs
            }
            print(
                f"\n{preset} preset, ms/step of the train stage's loop (K={K}; alone: the median of {args.rounds} "
                f"alternating rounds; in brackets the ratio to the same settings alone):"
            )
            print("| beside | " + " | ".join(configs) + " |\n|---|" + "---|" * len(configs))
            for load in LOADS:
                cells = [f"{table[c, load]:.1f} ({table[c, load] / table[c, 'alone']:.2f}x)" for c in configs]
                print(f"| {load} | " + " | ".join(cells) + " |")
            alone = table["project", "alone"] / table["torch", "alone"]
            worst = max(table["project", load] / table["project", "alone"] for load in LOADS)
            print(
                f"{preset}: alone, the project's step is {alone:.2f}x torch's ({'OK' if alone <= 1.2 else 'OVER'} "
                f"against 1.2x); beside other work, at worst {worst:.2f}x its time alone "
                f"({'OK' if worst <= 2 else 'OVER'} against 2x)"
            )


if __name__ == "__main__":
    main()
