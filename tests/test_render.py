"""The render stage's videos: the episodes the evaluation scored, rendered offscreen, each caption its record."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from dtrepro.evaluation.evaluate import evaluate_checkpoints
from dtrepro.evaluation.render import render_episodes
from dtrepro.params import EvalParams
from dtrepro.runtime.errors import DtreproError
from test_evaluate import toy_policy, write_checkpoint

from helpers import HOPPER, params

TARGETS = [3600.0, 400.0]


@pytest.fixture
def evaluated(tmp_path):
    """A model's two checkpoints evaluated as the evaluate stage does (3 episodes a target, 60 steps at most)."""
    folder = tmp_path / "k5-seed0"
    for name in ("last", "best"):
        write_checkpoint(folder / f"{name}.pt", toy_policy(5), step=10)
    values = params(eval={"episodes": 3, "targets": TARGETS, "max_steps": 60, "bootstrap_resamples": 100})
    chosen = EvalParams.from_params(values, HOPPER)
    evaluate_checkpoints(folder, chosen, tmp_path / "m.json", tmp_path / "e.csv", False, dataset=HOPPER)
    return folder, tmp_path / "e.csv", chosen


def test_each_video_is_the_evaluated_episode_and_its_caption_the_evaluations_record(evaluated, tmp_path):
    folder, episodes, chosen = evaluated
    made = render_episodes(folder / "last.pt", episodes, chosen, tmp_path / "videos", dataset=HOPPER)
    with open(episodes, newline="") as f:
        first = {float(r["target"]): r for r in csv.DictReader(f) if r["checkpoint"] == "last" and r["episode"] == "0"}
    listed = json.loads((tmp_path / "videos" / "videos.json").read_text())["videos"]
    assert listed == made["videos"] and [v["target"] for v in listed] == TARGETS
    for video in listed:
        record = first[video["target"]]
        assert video["return"] == float(record["return"]) and video["length"] == int(record["length"])
        assert video["normalized_score"] == pytest.approx(float(record["normalized_score"]))
        movie = Image.open(tmp_path / "videos" / video["file"])
        assert movie.format == "WEBP" and movie.n_frames > 2 and movie.size == (320, 240)


def test_a_video_that_is_not_the_evaluated_episode_is_refused(evaluated, tmp_path):
    """An evaluation made with other params (here: its record rewritten) is not what the video would show."""
    folder, episodes, chosen = evaluated
    text = episodes.read_text().splitlines()
    header, rows = text[0], [r.split(",") for r in text[1:]]
    col = header.split(",").index("return")
    for r in rows:
        r[col] = str(float(r[col]) + 1.0)
    episodes.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    with pytest.raises(DtreproError, match="returned .* when rendered, but the evaluation recorded"):
        render_episodes(folder / "last.pt", episodes, chosen, tmp_path / "videos", dataset=HOPPER)
