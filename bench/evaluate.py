"""Benchmark: 20 evaluation episodes stepped together against one after another (paper preset).

1. `run_episodes` (all episodes in lockstep, one forward per timestep for every
   live episode, the envs stepped by `EnvBatch`) against
   `run_episodes_one_by_one` (each episode alone, its window rebuilt from the
   growing history at every step, as the original implementation evaluates),
   same model, seeds and target; both must give identical returns. Each is
   timed `--repeats` times, alternating, and the medians are compared.
   Target on this CPU: >= 3.5x faster; on a GPU >= 10x.
2. The env-only floor: the same env steps through the same `EnvBatch` with a
   policy that costs nothing; how close evaluation comes to it.
3. The share of batched evaluation that is not the model's forward pass
   (tensor building, env stepping, Python per episode). Target: < 20%.
4. The forward pass alone at batch 1 and batch 20: the full forward (every
   position's prediction, as the original computes it) against
   `final_action`, which computes only the action that is used. What batching
   can gain is bounded by batch 20's cost against 20 times batch 1's.

The model is a checkpoint (`--checkpoint`, e.g. models/collected-hopper-mixed/k20-seed0/last.pt
after `make demo`), or else a paper-preset model trained here for a few hundred steps
so that its episodes last. The default settings (eval.amp: auto, bf16 on a CPU with
native bf16) are measured first, against the target; then the other precision.
`--device cuda` runs it on a GPU.
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.envbatch import EnvBatch
from dtrepro.agent.episodes import env_threads, run_episodes
from dtrepro.agent.policy import Policy, policy_from_checkpoint
from dtrepro.params import EvalParams, Run
from dtrepro.training.loop import train

from common import HOPPER, clean_hopper_file, preset_params
from support.reference import run_episodes_one_by_one

ROOT = Path(__file__).resolve().parents[1]
ENV, EPISODES, TARGET = "Hopper-v4", 20, 3600.0


def trained_paper_model(tmp: Path, steps: int) -> Policy:
    clean, _ = clean_hopper_file(tmp, 100_000)
    chosen = preset_params(steps=steps, warmup_steps=50, lr=6e-4, eval_every=10**9, eval_episodes=1)
    train(chosen, Run(20, 0), clean, tmp / "m", tmp / "log.tsv", tmp / "train.json", dataset=HOPPER)
    return policy_from_checkpoint(tmp / "m" / "last.pt")[0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_forward(policy: Policy):
    """Seconds spent inside the model's forward pass (`final_action`), appended to the yielded list."""
    model, spent = policy.model, []

    def final_action(*args, **kwargs):
        start = time.perf_counter()
        out = type(model).final_action(model, *args, **kwargs)
        synchronize(policy.device)
        spent.append(time.perf_counter() - start)
        return out

    model.final_action = final_action
    try:
        yield spent
    finally:
        del model.final_action


def env_floor(seeds: list[int], lengths: np.ndarray, threads: int) -> float:
    """The same env steps with the same `EnvBatch` as evaluation, under a free policy (zero actions)."""
    with EnvBatch(ENV, len(seeds), 1000, threads) as envs:
        envs.reset(seeds)
        actions = np.zeros((len(seeds), envs.act_dim), dtype=np.float32)
        start = time.perf_counter()
        for t in range(int(lengths.max())):
            live = np.flatnonzero(lengths > t)
            envs.step(live, actions[live])
        return time.perf_counter() - start


def forward_ms(policy: Policy, batch: int, full: bool, reps: int = 200) -> float:
    cfg, device = policy.model.cfg, policy.device
    k = cfg.context_len
    window = (
        torch.randn(batch, k, cfg.state_dim, device=device),
        torch.randn(batch, k, cfg.act_dim, device=device),
        torch.randn(batch, k, device=device),
        torch.arange(k, device=device).expand(batch, k),
        torch.ones(batch, k, dtype=torch.bool, device=device),
    )
    ctx = torch.autocast(device.type, policy.amp_dtype) if policy.amp_dtype else contextlib.nullcontext()

    def once():
        if not full:
            return policy.act(*window)  # under the policy's own autocast
        with ctx:
            return policy.model(*window)[:, -1]

    with torch.no_grad():
        for _ in range(10):
            once()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            once()
        synchronize(device)
    return (time.perf_counter() - start) / reps * 1e3


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (runs {min(values):.2f}-{max(values):.2f})"


def compare(policy: Policy, label: str, seeds: list[int], repeats: int, target: float) -> None:
    batched, sequential, outside = [], [], []
    for _ in range(repeats):
        with timed_forward(policy) as spent:
            start = time.perf_counter()
            together = run_episodes(policy, ENV, seeds, TARGET)
            batched.append(time.perf_counter() - start)
        outside.append(1 - sum(spent) / batched[-1])
        start = time.perf_counter()
        alone = run_episodes_one_by_one(policy, ENV, seeds, TARGET)
        sequential.append(time.perf_counter() - start)
    same = np.array_equal(together.returns, alone.returns) and np.array_equal(together.lengths, alone.lengths)
    floor = env_floor(seeds, together.lengths, env_threads(policy.device))
    steps, k = int(together.lengths.sum()), policy.model.cfg.context_len
    speedup = statistics.median(sequential) / statistics.median(batched)
    share = statistics.median(outside)
    full = [forward_ms(policy, b, full=True) for b in (1, EPISODES)]
    final = [forward_ms(policy, b, full=False) for b in (1, EPISODES)]
    print(
        f"[{label}] {EPISODES} episodes, {steps:,} env steps (lengths {together.lengths.min()}-"
        f"{together.lengths.max()}), mean return {together.returns.mean():.0f}; identical returns: {same}\n"
        f"  stepped together {spread(batched)} ({statistics.median(batched) / steps * 1e3:.2f} ms per "
        f"episode-step) vs one by one {spread(sequential)} -> {speedup:.2f}x "
        f"({'OK' if speedup >= target else 'UNDER'} against {target}x on this device)\n"
        f"  env-only floor {floor:.2f} s: evaluation takes {statistics.median(batched) / floor:.1f}x the floor\n"
        f"  outside the model's forward: {100 * share:.1f}% of batched evaluation (runs "
        f"{100 * min(outside):.1f}-{100 * max(outside):.1f}%; {'OK' if share < 0.2 else 'OVER'} against 20%; "
        f"env stepping alone {100 * floor / statistics.median(batched):.1f}%)\n"
        f"  forward alone, K={k}, batch 1 / batch {EPISODES}: full forward {full[0]:.2f} / {full[1]:.2f} ms, "
        f"final action only {final[0]:.2f} / {final[1]:.2f} ms; batch {EPISODES} costs "
        f"{final[1] / final[0]:.1f}x batch 1"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a last.pt/best.pt to evaluate (default: train a paper-preset model)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    device = pick_device(args.device, "--device")
    if args.checkpoint:
        policy, _ = policy_from_checkpoint(args.checkpoint, device)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            policy = trained_paper_model(Path(tmp), args.train_steps)
        policy.model.to(device)
    cfg = policy.model.cfg
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"model: embed {cfg.embed_dim}, {cfg.layers} layers, {cfg.heads} heads, K={cfg.context_len}; {where}")
    seeds, target = list(range(1000, 1000 + EPISODES)), 3.5 if device.type == "cpu" else 10.0
    amp = EvalParams.from_params(ROOT / "params.yaml", HOPPER).amp
    policy.amp_dtype = autocast_dtype(device, amp)
    compare(
        policy, f"default settings (eval.amp: {amp} -> {policy.amp_dtype or 'float32'})", seeds, args.repeats, target
    )
    policy.amp_dtype = None if policy.amp_dtype else torch.bfloat16
    compare(
        policy,
        "float32 (eval.amp: false)" if policy.amp_dtype is None else "bf16 (eval.amp: true)",
        seeds,
        args.repeats,
        target,
    )


if __name__ == "__main__":
    main()
