"""Benchmark: 20 evaluation episodes stepped together against one after another (paper preset).

1. `run_episodes` (all episodes in lockstep, one forward per timestep for every
   live episode) against `run_episodes_one_by_one` (each episode alone, its
   window rebuilt from the growing history at every step, as the original
   implementation evaluates), same model, seeds and target; both must give
   identical returns. Target on this CPU: >= 3.5x faster; on a GPU >= 10x.
2. The env-only floor: the same number of env steps, in the same lockstep
   loop, with a policy that costs nothing; how close evaluation comes to it.
3. The share of batched evaluation that is not the model's forward (tensor
   building, env stepping, Python per episode). Target: < 20%.
4. The forward pass alone at batch 1 and batch 20, which bounds what any
   batching can gain on this machine.

The model is a checkpoint (`--checkpoint`, e.g. models/k20-seed0/last.pt after
`make demo`), or else a paper-preset model trained here for a few hundred steps
so that its episodes last. bf16 autocast (eval.amp) is measured the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from dtrepro.envbatch import EnvBatch
from dtrepro.evaluate import Policy, policy_from_checkpoint, run_episodes, run_episodes_one_by_one
from dtrepro.train import TrainConfig, Trainer

from common import clean_hopper_file

ROOT = Path(__file__).resolve().parents[1]
ENV, EPISODES, TARGET = "Hopper-v4", 20, 3600.0


def trained_paper_model(tmp: Path, steps: int) -> Policy:
    preset = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())
    clean, _ = clean_hopper_file(tmp, 100_000)
    train = {**preset["train"], "device": "cpu", "steps": steps, "warmup_steps": 50, "lr": 6e-4}
    train.update(eval_every=10**9, checkpoint_every=10**9)
    cfg = TrainConfig.from_params(preset["model"], train, context_len=20, seed=0)
    trainer = Trainer(cfg, clean, tmp / "m", tmp / "log.tsv", "bench")
    for _ in range(steps):
        trainer.train_step()
    return Policy(trainer.model.eval(), trainer.data.state_mean, trainer.data.state_std, cfg.return_scale)


@contextlib.contextmanager
def timed_forward(policy: Policy):
    """Seconds spent inside the model's forward pass (`final_action`), appended to the yielded list."""
    model, spent = policy.model, []

    def final_action(*args, **kwargs):
        start = time.perf_counter()
        out = type(model).final_action(model, *args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    model.final_action = final_action
    try:
        yield spent
    finally:
        del model.final_action


def env_floor(seeds: list[int], lengths: np.ndarray) -> float:
    """The same env steps with the same `EnvBatch` as evaluation, under a free policy (zero actions)."""
    with EnvBatch(ENV, len(seeds)) as envs:
        envs.reset(seeds)
        actions = np.zeros((len(seeds), envs.act_dim), dtype=np.float32)
        start = time.perf_counter()
        for t in range(int(lengths.max())):
            live = np.flatnonzero(lengths > t)
            envs.step(live, actions[live])
        return time.perf_counter() - start


def forward_ms(policy: Policy, batch: int, k: int, reps: int = 200) -> float:
    cfg = policy.model.cfg
    window = (
        torch.randn(batch, k, cfg.state_dim),
        torch.randn(batch, k, cfg.act_dim),
        torch.randn(batch, k),
        torch.arange(k).expand(batch, k),
        torch.ones(batch, k, dtype=torch.bool),
    )
    for _ in range(10):
        policy.act(*window)
    start = time.perf_counter()
    for _ in range(reps):
        policy.act(*window)
    return (time.perf_counter() - start) / reps * 1e3


def compare(policy: Policy, label: str, seeds: list[int]) -> None:
    with timed_forward(policy) as spent:
        start = time.perf_counter()
        together = run_episodes(policy, ENV, seeds, TARGET)
        batched = time.perf_counter() - start
    forward = sum(spent)
    start = time.perf_counter()
    alone = run_episodes_one_by_one(policy, ENV, seeds, TARGET)
    sequential = time.perf_counter() - start
    same = np.array_equal(together.returns, alone.returns) and np.array_equal(together.lengths, alone.lengths)
    floor = env_floor(seeds, together.lengths)
    steps, k = int(together.lengths.sum()), policy.model.cfg.context_len
    outside = 1 - forward / batched
    speedup = sequential / batched
    print(
        f"[{label}] {EPISODES} episodes, {steps:,} env steps (lengths {together.lengths.min()}-"
        f"{together.lengths.max()}), mean return {together.returns.mean():.0f}; identical returns: {same}\n"
        f"  stepped together {batched:.2f} s ({batched / steps * 1e3:.2f} ms per episode-step) vs one by one "
        f"{sequential:.2f} s -> {speedup:.2f}x ({'OK' if speedup >= 3.5 else 'UNDER'} against 3.5x on a CPU)\n"
        f"  env-only floor {floor:.2f} s: evaluation takes {batched / floor:.1f}x the floor\n"
        f"  outside the model's forward: {100 * outside:.1f}% of batched evaluation "
        f"({'OK' if outside < 0.2 else 'OVER'} against 20%; env stepping alone {100 * floor / batched:.1f}%)\n"
        f"  forward alone, K={k}: batch 1 {forward_ms(policy, 1, k):.2f} ms, batch {EPISODES} "
        f"{forward_ms(policy, EPISODES, k):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a last.pt/best.pt to evaluate (default: train a paper-preset model)")
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    if args.checkpoint:
        policy, _ = policy_from_checkpoint(args.checkpoint)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            policy = trained_paper_model(Path(tmp), args.train_steps)
    cfg = policy.model.cfg
    print(
        f"model: embed {cfg.embed_dim}, {cfg.layers} layers, {cfg.heads} heads, K={cfg.context_len}; "
        f"{torch.get_num_threads()} CPU threads"
    )
    seeds = list(range(1000, 1000 + EPISODES))
    compare(policy, "float32", seeds)
    policy.amp_dtype = torch.bfloat16
    compare(policy, "bf16 autocast (eval.amp)", seeds)


if __name__ == "__main__":
    main()
