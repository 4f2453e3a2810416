"""Benchmark: the GPU numbers to paste (make bench-gpu), as one markdown table.

On collected Hopper data (the collect source's own medium set, made here: the GPU machine
needs no internet; or `--data` for a clean file you bring):

1. Training, the large-batch preset (embed 512, 4 layers, B=4096, K=20, train.amp: auto ->
   bf16, torch.compile) through the stage's own loop: steps/s, wall time to 2,500 steps
   including compilation, peak GPU memory. Target on an H100: <= 90 s (the large-batch
   source: under 3 minutes on an A100).
2. Evaluation of 60 episodes per checkpoint (20 episodes x 3 targets, stepped together):
   wall time, the share of it outside the model's forward, episodes/s, and the env-only floor
   of the same env steps. Target: within 1.5x the floor.
3. Which CUDA paths ran: GPU-resident data, TF32, fused AdamW, compile, bf16 autocast, and the
   fp16 GradScaler path (a short run with bf16 reported missing, as on a GPU without it).

`--device cpu --steps 20 --episodes 2` runs the same code small on a CPU.
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import argparse
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.policy import load_checkpoint, policy_from_checkpoint
from dtrepro.collect.collector import collect_to_files
from dtrepro.data.repair import repair_file
from dtrepro.evaluation.evaluate import evaluate_checkpoints
from dtrepro.params import CollectParams, EvalParams, RepairParams, Run, TrainParams
from dtrepro.pipeline.named_runs import resolve
from dtrepro.training.loop import train
from evaluate import env_floor, timed_forward

from common import ROOT

DATASET = "collected-hopper-medium"


def collected_hopper(folder: Path, rows: int) -> Path:
    """The collect source's Hopper medium set (ARS on the CPU, about a minute), repaired: the clean file."""
    params = resolve(ROOT, "default", [])
    collect = CollectParams.from_params({**params, "collect": {**params["collect"], "steps": rows}}, DATASET)
    collect_to_files(collect, folder / "raw.hdf5", folder / "policy.json", folder / "source.json")
    repair_file(
        folder / "raw.hdf5", folder / "clean.hdf5", folder / "repair.json", RepairParams.from_params(params, DATASET)
    )
    return folder / "clean.hdf5"


def large_batch(device: torch.device, steps: int, **train) -> TrainParams:
    values = resolve(ROOT, "large-batch", [])
    values["train"].update(
        device=device.type, steps=steps, eval_every=10**9, checkpoint_every=steps, log_every=50, **train
    )
    return TrainParams.from_params(values, DATASET)


def bench_train(clean: Path, tmp: Path, device: torch.device, steps: int) -> dict:
    params = large_batch(device, steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    metrics = train(params, Run(20, 0), clean, tmp / "m", tmp / "log.tsv", tmp / "train.json", dataset=DATASET)
    wall = time.perf_counter() - start
    ckpt = load_checkpoint(tmp / "m" / "last.pt")
    rates = [float(r) for r in (line.split("\t")[3] for line in (tmp / "log.tsv").read_text().splitlines()[1:]) if r]
    return {
        "params": params,
        "wall_s": wall,
        "steps_per_s": float(np.median(rates[1:] or rates)) / params.batch_size,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "final_loss": metrics["final_loss"],
        "paths": {
            "GPU-resident data": device.type == "cuda",  # Trajectories.from_d4rl(..., device): the sampler's tensors
            "TF32 matmuls": device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
            "fused AdamW": bool(ckpt["optimizer"]["param_groups"][0].get("fused")),
            "torch.compile": params.compile,
            "autocast": str(autocast_dtype(device, params.amp) or "float32"),
        },
    }


def bench_fp16(clean: Path, tmp: Path, device: torch.device) -> str:
    """A short run with bf16 reported missing: the fp16 autocast and GradScaler path."""
    if device.type != "cuda":
        return "not run (CPU: bf16 or float32 only)"
    params = large_batch(device, 50, compile=False)
    with mock.patch("torch.cuda.is_bf16_supported", return_value=False):
        metrics = train(params, Run(20, 0), clean, tmp / "fp16", tmp / "fp16.tsv", tmp / "fp16.json", dataset=DATASET)
    scale = load_checkpoint(tmp / "fp16" / "last.pt")["scaler"].get("scale")
    finite = metrics["final_loss"] is not None and np.isfinite(metrics["final_loss"])
    loss = f"final loss {metrics['final_loss']:.4f} ({'finite' if finite else 'NOT finite'})"
    return f"ran: 50 steps, {loss}, grad scale {scale}"


def bench_eval(tmp: Path, device: torch.device, episodes: int) -> dict:
    params = resolve(ROOT, "default", [])
    params["eval"].update(device=device.type, episodes=episodes)
    chosen = EvalParams.from_params(params, DATASET)
    policy, _ = policy_from_checkpoint(tmp / "m" / "last.pt", device)
    policy.amp_dtype = autocast_dtype(device, chosen.amp)
    import dtrepro.evaluation.evaluate as evaluate_module

    with (
        timed_forward(policy) as spent,
        mock.patch.object(
            evaluate_module, "policy_from_checkpoint", lambda path, dev: (policy, load_checkpoint(path, dev))
        ),
    ):
        start = time.perf_counter()
        evaluate_checkpoints(tmp / "m", chosen, tmp / "eval.json", tmp / "eval.csv", progress=False, dataset=DATASET)
        wall = time.perf_counter() - start
    lengths = np.array([int(line.split(",")[6]) for line in (tmp / "eval.csv").read_text().splitlines()[1:]])
    n = len(chosen.targets) * episodes  # per checkpoint; best.pt == last.pt here, so one set of episodes ran
    floor = env_floor(list(range(n)), lengths[:n], 16 if device.type == "cuda" else 2)
    return {"wall_s": wall, "outside": 1 - sum(spent) / wall, "episodes_per_s": n / wall, "floor_s": floor, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--episodes", type=int, default=20, help="per target (3 targets)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of collected data")
    parser.add_argument("--data", type=Path, help="a clean D4RL-layout Hopper file to train on instead")
    args = parser.parse_args()
    device = pick_device(args.device, "--device")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        clean = args.data or collected_hopper(tmp, args.rows)
        made = time.perf_counter() - start
        t = bench_train(clean, tmp, device, args.steps)
        fp16 = bench_fp16(clean, tmp, device)
        e = bench_eval(tmp, device, args.episodes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    p = t["params"]
    rows = [
        ("device", f"{name}; torch {torch.__version__}"),
        (
            "data",
            f"{f'--data {args.data}' if args.data else f'collected Hopper medium, {args.rows:,} rows'} ({made:.0f} s)",
        ),
        (
            "training",
            f"large-batch: embed {p.model.embed_dim}, {p.model.layers} layers, B={p.batch_size}, K=20, "
            f"{t['paths']['autocast']}, compile={p.compile}",
        ),
        (
            f"wall time to {args.steps:,} steps, compile included",
            f"{t['wall_s']:.1f} s"
            + (f" ({'OK' if t['wall_s'] <= 90 else 'OVER'} against 90 s)" if args.steps == 2500 else ""),
        ),
        ("steps/s (steady)", f"{t['steps_per_s']:.2f}"),
        ("peak GPU memory", f"{t['peak_gib']:.1f} GiB"),
        (f"evaluation, {e['n']} episodes per checkpoint", f"{e['wall_s']:.1f} s, {e['episodes_per_s']:.1f} episodes/s"),
        ("share outside the model's forward", f"{100 * e['outside']:.0f}%"),
        (
            "env-only floor of the same steps",
            f"{e['floor_s']:.1f} s -> evaluation is {e['wall_s'] / e['floor_s']:.2f}x "
            f"({'OK' if e['wall_s'] <= 1.5 * e['floor_s'] else 'OVER'} against 1.5x)",
        ),
        *((f"path: {k}", "yes" if v is True else "no" if v is False else v) for k, v in t["paths"].items()),
        ("path: fp16 + GradScaler (bf16 off)", fp16),
    ]
    print("| measure | value |\n|---|---|")
    print("\n".join(f"| {k} | {v} |" for k, v in rows))
    print(json.dumps({k: v for k, v in rows}, indent=1))


if __name__ == "__main__":
    main()
