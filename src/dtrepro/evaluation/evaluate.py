"""The evaluate stage: a trained model's last and best checkpoints at every target, with the metrics.

Both checkpoints run `episodes` episodes at each of `targets`, all stepped together
(`run_episodes`). The stage writes one CSV row per episode and flat JSON metrics:
returns and normalised scores with a 95% bootstrap CI per checkpoint and target. Both name the
checkpoint each number came from by its MD5 (the hash `dvc.lock` records for it), so that the report
can refuse an evaluation whose parts disagree, or disagree with the checkpoints trained.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from dtrepro.agent.checkpoint import CHECKPOINTS
from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.episodes import EpisodeResults, run_episodes
from dtrepro.agent.policy import policy_from_checkpoint
from dtrepro.evaluation.results import EPISODE_FIELDS, metric_key
from dtrepro.evaluation.stats import score_summary
from dtrepro.params import EvalParams
from dtrepro.registry.datasets import family
from dtrepro.registry.scores import normalized_score, reference_scores
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError


def check_time_limit(policy, params: EvalParams, path) -> None:
    """Refuse episodes longer than the model has timestep embeddings for (they would be clamped silently)."""
    limit = policy.model.cfg.max_timestep
    if params.max_steps > limit:
        raise DtreproError(
            f"eval.max_steps is {params.max_steps}, but the model of {path} embeds timesteps up to {limit} only (the "
            f"envs' time limit): later steps would all share the last embedding. Set eval.max_steps to at most {limit}."
        )


def check_family(trained: str, evaluated: str, path) -> None:
    """Refuse a checkpoint trained for another env family than the one it would be scored on (Walker2d's and
    HalfCheetah's models take the same state and action widths, so the widths alone do not tell)."""
    if family(str(trained)) != family(evaluated):
        raise DtreproError(
            f"{path} was trained for {trained}, but the evaluation runs {evaluated}: its scores would be another "
            f"env's. Evaluate it on its own env's dataset, or train a model for {evaluated}."
        )


def play(
    policy, params: EvalParams, refs: tuple[float, float], progress: bool = True
) -> tuple[EpisodeResults, dict[float, dict]]:
    """`params.episodes` episodes at each target (episode seeds `params.episode_seeds` at every one), all stepped
    together, and each target's summary (`score_summary`): the protocol every scored model goes through."""
    seeds = params.episode_seeds * len(params.targets)
    targets = np.repeat(params.targets, params.episodes)
    results = run_episodes(policy, params.env_id, seeds, targets, params.max_steps, progress)
    summaries = {}
    for target in params.targets:
        chosen = results.targets == target
        returns, lengths = results.returns[chosen], results.lengths[chosen]
        summaries[target] = score_summary(
            returns, lengths, params.env_id, params.bootstrap_resamples, params.seed, refs
        )
    return results, summaries


def episode_rows(name: str, md5: str, step: int, results: EpisodeResults, params: EvalParams, refs) -> list[tuple]:
    """The CSV rows (`EPISODE_FIELDS`) of one model's episodes."""
    scores = normalized_score(results.returns, params.env_id, refs)
    r = results
    return [
        (name, md5, step, r.targets[i], i % params.episodes, r.seeds[i], r.returns[i], r.lengths[i], scores[i])
        for i in range(len(r.seeds))
    ]


def write_episodes(path, rows: list[tuple]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EPISODE_FIELDS)
        writer.writerows(rows)


def evaluate_checkpoints(
    checkpoint_dir: str | os.PathLike,
    params: EvalParams,
    metrics_path,
    episodes_path,
    progress: bool = True,
    *,
    dataset: str,
) -> dict:
    """Evaluate `last.pt` and `best.pt` at every target; write per-episode rows (CSV) and flat metrics (JSON)."""
    device = pick_device(params.run.device)
    metrics = {"env_id": params.env_id, "episodes": params.episodes, "seed": params.seed}
    rows, done = [], {}
    for name in CHECKPOINTS:
        path = Path(checkpoint_dir) / f"{name}.pt"
        policy, ckpt = policy_from_checkpoint(path, device)
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        metrics.update({f"{name}.path": path.as_posix(), f"{name}.md5": md5})
        check_family(ckpt.env_id, params.env_id, path)
        # the dataset's reference scores (D4RL's for D4RL's data, whatever the checkpoint carries)
        ref_min, ref_max, ref_source = reference_scores(ckpt.ref_scores, dataset)
        metrics.update(ref_min_score=ref_min, ref_max_score=ref_max, ref_scores_source=ref_source)
        policy.amp_dtype = autocast_dtype(device, params.amp)
        check_time_limit(policy, params, path)
        step = int(ckpt.step)
        metrics.update(
            {"context_len": policy.model.cfg.context_len, "train_seed": ckpt.train_seed, f"{name}.step": step}
        )
        if step not in done:  # best.pt saved at the last step holds the same weights as last.pt
            done[step] = play(policy, params, (ref_min, ref_max), progress)
        results, summaries = done[step]
        metrics.update({metric_key(name, t, k): v for t, s in summaries.items() for k, v in s.items()})
        rows += episode_rows(name, md5, step, results, params, (ref_min, ref_max))
    write_episodes(episodes_path, rows)
    write_json(metrics_path, metrics)
    return metrics
