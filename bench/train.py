"""Benchmark: the window sampler and the training step (paper preset) on this machine.

1. WindowSampler against a reference that builds each sample in a Python loop
   the way the original implementation's `get_batch` does (episode chosen by
   length, random start, returns-to-go by a reverse Python loop over the rest
   of the episode, padding by concatenation), B=64, K=20, same dataset.
   Target: >= 100x the windows per second.
2. The `paper` preset's training step on the CPU: ms/step and tokens/s through
   the stage's own loop (`train`: sampling, logging, progress bar; its log's
   per-window throughput), and the share of a step spent outside the model,
   against the same steps on one fixed batch. Target: <= 5%.
3. Precision, side by side in this run: the preset's default (`train.amp: auto`:
   bf16 autocast on a CPU with native bf16) against float32 (`train.amp: false`),
   both through the stage's own loop. Target: <= 0.6x float32's step time where
   the CPU has native bf16.
4. Dropout on the CPU, side by side in this run: the model's `dropout` (masks from
   16-bit uniforms) against torch's (`F.dropout`: a `bernoulli_` draw per entry),
   through the stage's own loop in the default precision, for the `demo` and the
   `paper` presets.
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import dtrepro.agent.dropout
import dtrepro.agent.model
from dtrepro.agent.device import autocast_dtype, cpu_has_native_bf16
from dtrepro.agent.model import MAX_TIMESTEP, DecisionTransformer, ModelConfig, action_loss
from dtrepro.data.d4rl import read_d4rl
from dtrepro.params import Run
from dtrepro.training.loop import train
from dtrepro.training.sampler import Trajectories, WindowSampler

from common import HOPPER, clean_hopper_file, preset_params

ROOT = Path(__file__).resolve().parents[1]
ROWS, B, K = 1_000_000, 64, 20


def reference_get_batch(episodes, p_sample, state_mean, state_std, rng: random.Random, np_rng):
    """Per-sample Python batch building, with the original implementation's semantics."""
    state_dim, act_dim = episodes[0]["observations"].shape[1], episodes[0]["actions"].shape[1]
    picks = np_rng.choice(len(episodes), size=B, replace=True, p=p_sample)
    s, a, rtg, ts, mask = [], [], [], [], []
    for i in picks:
        ep = episodes[i]
        si = rng.randint(0, len(ep["rewards"]) - 1)
        obs = ep["observations"][si : si + K]
        n = len(obs)
        rest = ep["rewards"][si:]
        cum = np.zeros_like(rest)
        cum[-1] = rest[-1]
        for t in reversed(range(len(rest) - 1)):
            cum[t] = rest[t] + cum[t + 1]
        s.append(np.concatenate([np.zeros((K - n, state_dim)), (obs - state_mean) / state_std]))
        a.append(np.concatenate([np.ones((K - n, act_dim)) * -10.0, ep["actions"][si : si + K]]))
        rtg.append(np.concatenate([np.zeros(K - n), cum[:n] / 1000.0]))
        ts.append(np.concatenate([np.zeros(K - n), np.minimum(np.arange(si, si + n), 999)]))
        mask.append(np.concatenate([np.zeros(K - n), np.ones(n)]))
    return [torch.from_numpy(np.stack(x)).float() for x in (s, a, rtg, ts, mask)]


def bench_sampler(data) -> None:
    traj = Trajectories.from_d4rl(data, 1000.0, 1000, "cpu")
    starts, lengths = traj.episode_start.numpy(), traj.episode_length.numpy()
    a = data.arrays
    episodes = [
        {k: a[k][s : s + n] for k in ("observations", "actions", "rewards")}
        for s, n in zip(starts, lengths, strict=True)
    ]
    p = lengths / lengths.sum()
    rng, np_rng = random.Random(0), np.random.default_rng(0)
    sampler = WindowSampler(traj, K, B, seed=0)
    for _ in range(5):
        sampler.sample()

    def rate(fn, seconds=3.0):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        return n * B / (time.perf_counter() - start)

    ref = rate(lambda: reference_get_batch(episodes, p, traj.state_mean, traj.state_std, rng, np_rng))
    ours = rate(sampler.sample)
    verdict = "OK" if ours / ref >= 100 else "UNDER"
    print(
        f"sampler B={B} K={K} on {ROWS:,} rows: WindowSampler {ours:,.0f} windows/s vs per-sample Python "
        f"get_batch {ref:,.0f} windows/s -> {ours / ref:,.0f}x ({verdict} against 100x)"
    )


def stage_step(
    clean: Path, tmp: Path, name: str, steps: int = 200, profile: str = "paper", **train_values
) -> tuple[float, float]:
    """(seconds per step in the stage's own loop, seconds for the whole stage) for a preset (named run)."""
    params = preset_params(
        profile, steps=steps, log_every=20, eval_every=10**9, checkpoint_every=10**9, eval_episodes=1, **train_values
    )
    start = time.perf_counter()
    train(params, Run(K, 0), clean, tmp / name, tmp / f"{name}.tsv", tmp / f"{name}.json", dataset=HOPPER)
    whole = time.perf_counter() - start
    with open(tmp / f"{name}.tsv") as f:  # the loop's own throughput per window, without set-up or evaluation
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f, delimiter="\t") if r["samples_per_s"]]
    return params.batch_size / float(np.median(rates[1:])), whole  # the first window holds the warm-up


def bench_step(clean: Path, tmp: Path) -> float:
    """The stage's own loop (`train`) against the same steps on one fixed batch: model, loss and update only.
    Both in float32, so that the share outside the model is not the autocast's; returns float32's s/step."""
    steps = 200
    params = preset_params(amp=False)
    full, whole = stage_step(clean, tmp, "fp32", steps, amp=False)

    data = Trajectories.from_d4rl(read_d4rl(clean), params.return_scale, MAX_TIMESTEP, "cpu")
    fixed = WindowSampler(data, K, params.batch_size, 0).sample()
    cfg = ModelConfig(**params.model.model_dump(), state_dim=data.states.shape[1], act_dim=3, context_len=K)
    model = DecisionTransformer(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        pred = model(fixed["states"], fixed["actions"], fixed["returns_to_go"], fixed["timesteps"], fixed["mask"])
        loss = action_loss(pred, fixed["actions"], fixed["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        times.append(time.perf_counter() - start)
    model_only = float(np.median(times[10:]))
    sampler = WindowSampler(data, K, params.batch_size, 1)
    start = time.perf_counter()
    for _ in range(1000):
        sampler.sample()
    sampling = (time.perf_counter() - start) / 1000
    tokens = params.batch_size * 3 * K / full
    share = max(0.0, 1 - model_only / full)
    print(
        f"paper preset, float32, on {torch.get_num_threads()} CPU threads: {full * 1e3:.1f} ms/step, "
        f"{tokens:,.0f} tokens/s; "
        f"model alone {model_only * 1e3:.1f} ms/step -> {100 * share:.1f}% of a step outside the model "
        f"(sampling alone {sampling * 1e3:.2f} ms = {100 * sampling / full:.2f}%) "
        f"({'OK' if share <= 0.05 else 'OVER'} against 5%); the whole stage for {steps} steps, with set-up, "
        f"one evaluation and the checkpoints: {whole:.1f} s"
    )
    return full


def bench_precision(clean: Path, tmp: Path, float32: float) -> None:
    """The preset's default precision (train.amp: auto) against float32's step time measured in this run."""
    amp = preset_params().amp
    dtype = autocast_dtype(torch.device("cpu"), amp)
    default, _ = stage_step(clean, tmp, "default")
    ratio = default / float32
    native = cpu_has_native_bf16()
    verdict = ("OK" if ratio <= 0.6 else "OVER") if native else "no native bf16 here: float32 is the default"
    print(
        f"paper preset, default precision (train.amp: {amp} -> {dtype or 'float32'}; native CPU bf16: {native}): "
        f"{default * 1e3:.1f} ms/step vs float32 {float32 * 1e3:.1f} ms/step -> {ratio:.2f}x ({verdict} against "
        f"0.6x)"
    )


def stock_attention(q, k, v, mask, p):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def bench_dropout(clean: Path, tmp: Path) -> None:
    """The model's CPU dropout against torch's stock parts (nn.Dropout's F.dropout, SDPA's own attention dropout),
    through the stage's own loop, for the demo and paper presets."""
    ours = (dtrepro.agent.dropout.dropout, dtrepro.agent.model.attention)
    stock = (lambda x, p, training=True: F.dropout(x, p, training), stock_attention)
    for profile, steps in (("demo", 400), ("paper", 200)):
        times = {}
        for name, (drop, attend) in (("ours", ours), ("torch", stock)):
            dtrepro.agent.dropout.dropout, dtrepro.agent.model.attention = drop, attend  # what the model calls
            try:
                times[name], _ = stage_step(clean, tmp, f"{profile}-{name}", steps, profile)
            finally:
                dtrepro.agent.dropout.dropout, dtrepro.agent.model.attention = ours
        model = preset_params(profile).model
        print(
            f"{profile} preset (embed {model.embed_dim}, {model.layers} layers, dropout {model.dropout}), default "
            f"precision: with the model's CPU dropout {times['ours'] * 1e3:.1f} ms/step vs torch's own "
            f"{times['torch'] * 1e3:.1f} ms/step -> {times['torch'] / times['ours']:.2f}x faster (keep: >= 1.3x)"
        )


def main() -> None:
    only_dropout = sys.argv[1:] == ["--dropout"]  # the CPU dropout's figure alone
    with tempfile.TemporaryDirectory() as tmp:
        clean, data = clean_hopper_file(Path(tmp), ROWS)
        if only_dropout:
            return bench_dropout(clean, Path(tmp))
        bench_sampler(data)
        float32 = bench_step(clean, Path(tmp))
        bench_precision(clean, Path(tmp), float32)
        bench_dropout(clean, Path(tmp))


if __name__ == "__main__":
    main()
