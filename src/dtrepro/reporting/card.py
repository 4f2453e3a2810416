"""A trained model as a Hugging Face `DecisionTransformerModel` folder, with the model card Hub cards lack: the
data and its hash, the state statistics and return scale to act with, the evaluation's scores with their CIs,
and the command that reproduces them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dtrepro.agent.checkpoint import CHECKPOINTS, Checkpoint
from dtrepro.agent.hub import write_hub_folder
from dtrepro.agent.model import ModelConfig
from dtrepro.evaluation.results import metric_key
from dtrepro.reporting.report import TEMPLATES
from dtrepro.runtime.errors import DtreproError

CARD = "card.md.j2"


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise DtreproError(
            f"{path} cannot be read: {what}. Run the pipeline for this model first (dvc repro)."
        ) from None


def scores(evaluation: dict) -> list[dict]:
    """The card's rows: each checkpoint at each target of the evaluate stage's metrics, highest target first."""
    targets = {float(m.group(1)) for k in evaluation if (m := re.match(r"last\.target_([^.]+)\.", k))}
    rows = []
    for c in CHECKPOINTS:
        for t in sorted(targets, reverse=True):
            value = {f: evaluation[metric_key(c, t, f)] for f in ("return_mean", "normalized_score_mean")}
            low, high = (evaluation[metric_key(c, t, f"normalized_score_ci95_{e}")] for e in ("low", "high"))
            rows.append({"checkpoint": c, "target": f"{t:g}", "return": f"{value['return_mean']:.0f}"})
            rows[-1] |= {"score": f"{value['normalized_score_mean']:.1f}", "ci": f"[{low:.1f}, {high:.1f}]"}
    return rows


def export(root: Path, model_dir: Path, out: Path, checkpoint: str = "last") -> Path:
    """`model_dir` (models/<dataset>/k<K>-seed<S> of the repository at `root`) as a DecisionTransformerModel folder
    `out`: its `checkpoint`.pt's weights, config.json, dtrepro.json (how to act with it) and README.md (the card)."""
    root, model_dir = root.resolve(), model_dir.resolve()
    try:
        dataset, run = model_dir.relative_to(root / "models").parent.as_posix(), model_dir.name
    except ValueError:
        raise DtreproError(
            f"{model_dir} is not a model folder of {root}: give models/<dataset>/k<K>-seed<S>, whose evaluation "
            f"(reports/eval/<dataset>/k<K>-seed<S>.json) the card reports."
        ) from None
    ckpt = Checkpoint.load(model_dir / f"{checkpoint}.pt")
    cfg = ModelConfig(**ckpt.config)
    evaluation = _read(root / "reports/eval" / dataset / f"{run}.json", "the model's evaluation")
    source = _read(root / "reports/source" / f"{dataset}.json", "the dataset's source metrics")
    acting = {"state_mean": ckpt.state_mean.tolist(), "state_std": ckpt.state_std.tolist()}
    acting |= {"return_scale": ckpt.return_scale, "env_id": ckpt.env_id, "context_len": cfg.context_len}
    card = TEMPLATES.get_template(CARD).render(
        **cfg.model_dump(),
        return_scale=ckpt.return_scale,
        env_id=ckpt.env_id,
        dataset=dataset,
        sha256=source.get("sha256", "unknown"),
        checkpoint=checkpoint,
        step=ckpt.step,
        train_seed=ckpt.train_seed,
        episodes=evaluation["episodes"],
        seed=evaluation["seed"],
        references=evaluation.get("ref_scores_source", "d4rl"),
        scores=scores(evaluation),
        state_mean=[round(x, 4) for x in acting["state_mean"]],
        state_std=[round(x, 4) for x in acting["state_std"]],
        command=f"dvc repro evaluate@{dataset}-{cfg.context_len}-{ckpt.train_seed}  # with this commit's params.yaml",
    )
    write_hub_folder(cfg, ckpt.model, out, card)
    (out / "dtrepro.json").write_text(json.dumps(acting, indent=1) + "\n")
    return out
