"""The report reads only evaluations made with its params: episode counts, episode seeds and targets checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtrepro.agent.checkpoint import CHECKPOINTS
from dtrepro.params import EvalParams
from dtrepro.reporting.report import check_evaluation, check_scored, provenance_line
from dtrepro.runtime.errors import DtreproError

from helpers import COLLECTED, params

EVAL = EvalParams.from_params(params(eval={"episodes": 3, "seed": 1000, "targets": [3600, 400]}), COLLECTED)


def rows(episodes=3, seed=1000, targets=(3600.0, 400.0)) -> list[dict]:
    """An evaluation's rows as the evaluate stage writes them (read back as the report reads them)."""
    return [
        {"checkpoint": c, "target": t, "seed": seed + i, "step": 20, "return": 1.0, "normalized_score": 1.0}
        for c in CHECKPOINTS
        for t in targets
        for i in range(episodes)
    ]


def test_an_evaluation_made_with_the_params_is_read():
    check_evaluation(rows(), EVAL, Path("k5-seed0.csv"))


@pytest.mark.parametrize(
    "made",
    [
        rows(episodes=7),  # another eval.episodes: a report of "3 episodes" averaging 7
        rows(seed=2000),  # other episode seeds
        rows(targets=(3600.0, 1800.0)),  # another target
        rows(targets=(3600.0, 400.0, 1800.0)),  # one target more
        rows()[:-1],  # an episode missing
        rows() + rows()[:1],  # an episode twice
    ],
    ids=["episodes", "seeds", "target", "extra-target", "missing-episode", "repeated-episode"],
)
def test_an_evaluation_made_with_other_eval_params_is_refused(made):
    """Before, the report averaged whatever rows it found at its targets, under its params' episode count."""
    with pytest.raises(DtreproError, match=r"k5-seed0.csv is not an evaluation with the eval params of params.yaml"):
        check_evaluation(made, EVAL, Path("k5-seed0.csv"))


def test_the_data_line_names_the_bytes_and_what_made_them():
    collected = {
        "source": "collect",
        "sha256": "ab" * 32,
        "cpu": "AMD EPYC",
        "numpy_simd": "AVX512_ICL",
        "blas_core": "Haswell",
        "version/mujoco": "4.0.0",
        "version/gymnasium": "1.4.0",
        "workers": 2,
    }
    line = provenance_line(collected)
    assert line.startswith(f"Data: SHA-256 `{'ab' * 8}`…, collected on `AMD EPYC` (numpy SIMD `AVX512_ICL`, OpenBLAS")
    assert "kernels `Haswell`) with MuJoCo `4.0.0`, gymnasium `1.4.0` and `2` worker processes." in line
    downloaded = {"source": "download", "sha256": "cd" * 32, "url": "http://mirror/hopper-medium-v2.hdf5"}
    assert (
        provenance_line(downloaded)
        == f"Data: SHA-256 `{'cd' * 8}`…, downloaded from `http://mirror/hopper-medium-v2.hdf5`."
    )


def scored(tmp_path, md5s=("a" * 32, "b" * 32), score=1.0):
    """An evaluation's rows and the metrics file beside them, as the evaluate stage writes both."""
    made = [{**r, "checkpoint_md5": md5s[CHECKPOINTS.index(r["checkpoint"])]} for r in rows()]
    metrics = {f"{c}.md5": m for c, m in zip(CHECKPOINTS, ("a" * 32, "b" * 32), strict=True)}
    metrics |= {f"{c}.path": f"models/d/k5-seed0/{c}.pt" for c in CHECKPOINTS}
    metrics |= {f"{c}.target_{t:g}.normalized_score_mean": score for c in CHECKPOINTS for t in EVAL.targets}
    (tmp_path / "k5-seed0.json").write_text(json.dumps(metrics))
    return made, tmp_path / "k5-seed0.csv"


def test_an_evaluation_whose_episodes_metrics_and_checkpoints_agree_is_read(tmp_path):
    made, path = scored(tmp_path)
    check_scored(made, EVAL, path, {"models/d/k5-seed0/last.pt": "a" * 32, "models/d/k5-seed0/best.pt": "b" * 32})


@pytest.mark.parametrize(
    "case, expected",
    [
        (
            "other-checkpoint",
            "the episodes of best.pt name the checkpoint cccccccccccccccccccccccccccccccc, the metrics",
        ),
        ("lock", "both scored last.pt with MD5 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, but dvc.lock records"),
        ("other-scores", "the episodes of last.pt at target 3600 average 1.0000, the metrics say 7.5"),
    ],
)
def test_an_evaluation_whose_parts_disagree_is_refused(tmp_path, case, expected):
    made, path = scored(tmp_path, md5s=("a" * 32, "c" * 32) if case == "other-checkpoint" else ("a" * 32, "b" * 32))
    if case == "other-scores":
        scored(tmp_path, score=7.5)
    recorded = {"models/d/k5-seed0/last.pt": "d" * 32} if case == "lock" else {}
    with pytest.raises(DtreproError, match="do not agree") as err:
        check_scored(made, EVAL, path, recorded)
    assert expected in str(err.value)


def plot_row(k, checkpoint, target, score):
    return {"context_len": k, "checkpoint": checkpoint, "target": target, "normalized_score_mean": score}


def test_plots_keep_the_studys_k_order_and_draw_best_only_where_it_differs(tmp_path, monkeypatch):
    """The bar chart leads with the headline K as the tables do; where best.pt is last.pt everywhere it draws one
    bar a K and says so; the suite's legend names only what it draws (no published score for collected data)."""
    import matplotlib.pyplot as plt

    from dtrepro.reporting import plots

    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: (drawn.append(fig), plt.close(fig)))

    def legend_and_ticks(fig):
        ax = fig.axes[0]
        return [t.get_text() for t in ax.get_legend().get_texts()], [t.get_text() for t in ax.get_xticklabels()]

    same = [
        {**plot_row(k, c, 3600, 50.0 + k), "normalized_score_std_seeds": 1.0} for k in (20, 1) for c in ("last", "best")
    ]
    plots.context_length(same, tmp_path / "a.png", "score")
    assert legend_and_ticks(drawn[-1]) == (["last.pt (= best.pt)"], ["K=20", "K=1"])
    differ = [{**r, "normalized_score_mean": r["normalized_score_mean"] + (r["checkpoint"] == "best")} for r in same]
    plots.context_length(differ, tmp_path / "b.png", "score")
    assert legend_and_ticks(drawn[-1])[0] == ["last.pt", "best.pt"]
    row = {"dataset": "collected-hopper-medium", "last_mean": 3.0, "best_mean": 3.5, "last_std_seeds": 1.0}
    plots.suite_scores([{**row, "best_std_seeds": 1.0}], tmp_path / "c.png", "score")
    assert legend_and_ticks(drawn[-1])[0] == ["ours last.pt", "ours best.pt"]
