"""The hub stage: transformers `DecisionTransformerModel` folders (params.yaml's hf.models) scored under the study's
protocol, as the evaluate stage scores this project's models: the eval section's env, targets, episodes, episode
seeds and confidence intervals, the dataset's reference scores. The folders map onto this project's model exactly
(`agent.hub`); what they were trained with (state statistics, return scale, context length) are the hf params.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.hub import read_hub_folder
from dtrepro.agent.model import DecisionTransformer
from dtrepro.agent.policy import Policy
from dtrepro.data.d4rl import read_d4rl
from dtrepro.evaluation.evaluate import check_time_limit, episode_rows, play, write_episodes
from dtrepro.evaluation.results import metric_key
from dtrepro.params import EvalParams, HubParams
from dtrepro.registry.scores import reference_scores
from dtrepro.runtime.atomic import write_json
from dtrepro.runtime.errors import DtreproError
from dtrepro.training.sampler import state_statistics

WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what `save_pretrained` writes, newest first


def hub_policy(folder: Path, hf: HubParams, stats: tuple[np.ndarray, np.ndarray], device) -> tuple[Policy, str]:
    """The folder's model as a policy with the hf params' normalisation, and the MD5 of its weights file."""
    cfg, weights = read_hub_folder(folder, hf.context_len)
    if len(stats[0]) != cfg.state_dim:
        raise DtreproError(
            f"{folder} takes {cfg.state_dim}-dim states, but hf.state_mean and hf.state_std (or the dataset's own) "
            f"have {len(stats[0])}: they are another env's. Give the statistics its states were normalised with."
        )
    model = DecisionTransformer(cfg).to(device)
    model.load_state_dict(weights)
    mean, std = (np.asarray(s, dtype=np.float32) for s in stats)
    file = next(folder / w for w in WEIGHTS if (folder / w).is_file())
    return Policy(model, mean, std, hf.return_scale), hashlib.md5(file.read_bytes()).hexdigest()


def evaluate_hub_folders(
    folders: list[str], params: EvalParams, hf: HubParams, data_path: Path, metrics_path, episodes_path, *, dataset: str
) -> dict:
    """Score each folder at every target (`evaluate.play`) with `params`' protocol on `dataset` (`data_path`: its
    repaired file, whose states give the statistics when hf's are null, and whose reference scores normalise);
    write one CSV row per episode and flat metrics keyed by folder, e.g.
    `hub/hopper-medium.target_3600.normalized_score_mean`."""
    device = pick_device(params.run.device)
    metrics = {"env_id": params.env_id, "episodes": params.episodes, "seed": params.seed, "models": folders}
    metrics.update(context_len=hf.context_len, return_scale=hf.return_scale)
    rows = []
    if folders:
        data = read_d4rl(data_path)
        refs = reference_scores(data.metadata, dataset)
        metrics.update(ref_min_score=refs[0], ref_max_score=refs[1], ref_scores_source=refs[2])
        own = hf.state_mean is None
        stats = state_statistics(data.arrays["observations"]) if own else (hf.state_mean, hf.state_std)
        metrics["state_statistics"] = f"{data_path.as_posix()}'s own" if own else "hf.state_mean, hf.state_std"
        for folder in folders:
            policy, md5 = hub_policy(Path(folder), hf, stats, device)
            policy.amp_dtype = autocast_dtype(device, params.amp)
            check_time_limit(policy, params, folder)
            results, summaries = play(policy, params, refs[:2])
            metrics.update({metric_key(folder, t, k): v for t, s in summaries.items() for k, v in s.items()})
            metrics[f"{folder}.md5"] = md5
            rows += episode_rows(folder, md5, 0, results, params, refs[:2])
    write_episodes(episodes_path, rows)
    write_json(metrics_path, metrics)
    return metrics
