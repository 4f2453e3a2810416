"""The names of an evaluation's results: the evaluate stage writes them and the report reads them back."""

from __future__ import annotations

# checkpoint_md5: the scored file's MD5, the hash dvc.lock records for it, so that each row names what it scored
EPISODE_FIELDS = (
    "checkpoint", "checkpoint_md5", "step", "target", "episode", "seed", "return", "length", "normalized_score"
)  # fmt: skip


def metric_key(checkpoint: str, target: float, field: str) -> str:
    """The flat metrics key of one evaluation's field, e.g. `last.target_3600.normalized_score_mean`."""
    return f"{checkpoint}.target_{target:g}.{field}"
