"""dvc.yaml agrees with the code: each stage's deps are its command's imports, its params the keys that
change its results, and every path a script uses comes from the stage's command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from dtrepro.evaluation.eval_params import EvalParams
from dtrepro.pipeline.closure import as_deps, closure
from dtrepro.training.loop import NOT_IN_RESULTS, TrainParams

from helpers import ROOT, run

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def scripts(stage: dict) -> list[Path]:
    return [ROOT / stage["cmd"].split()[1]]


def code_deps(stage: dict) -> set[str]:
    """The stage's deps that are project code (Python files and package folders)."""
    return {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_are_exactly_the_import_closure_of_the_stage_command(name):
    stage = STAGES[name]
    imported = set().union(*(closure(s) for s in scripts(stage)))
    assert code_deps(stage) == as_deps(imported)


def test_the_closure_follows_imports_transitively():
    files = closure(ROOT / "stages" / "evaluate.py")
    assert Path("src/dtrepro/agent/envbatch.py") in files  # evaluate -> agent.episodes -> agent.envbatch
    assert Path("src/dtrepro/reporting/report.py") not in files and Path("src/dtrepro/training/loop.py") not in files
    assert "src/dtrepro/collect" in as_deps(closure(ROOT / "stages" / "source.py"))  # all of collect/


def test_a_data_file_a_module_reads_is_a_dep_of_every_stage_that_imports_it():
    """registry/datasets.py reads d4rl_files.tsv beside it: an edit to the published hashes re-runs its stages."""
    files = closure(ROOT / "stages" / "study.py")
    assert Path("src/dtrepro/registry/d4rl_files.tsv") in files
    assert "src/dtrepro/registry/d4rl_files.tsv" in STAGES["study"]["deps"]


def test_train_params_are_every_key_that_changes_a_result():
    listed = STAGES["train"]["params"]
    keys = {f"train.{k}" for k in TrainParams.model_fields if k != "model"} - {f"train.{k}" for k in NOT_IN_RESULTS}
    assert set(listed) == {"model", "data.env_version"} | keys


def test_evaluate_params_are_every_eval_key_but_the_device():
    keys = {f"eval.{k}" for k in EvalParams.model_fields} - {"eval.device"}
    assert set(STAGES["evaluate"]["params"]) == keys | {"data.env_version"}


@pytest.mark.slow
def test_every_path_a_script_writes_comes_from_its_command():
    """Scripts have no default paths: each output path is written once, in dvc.yaml's cmd."""
    for name, stage in STAGES.items():
        cmd = " ".join(stage["cmd"].split())
        declared = [
            next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots")
            for o in stage.get(key, [])
        ]
        for path in declared:
            folder_of = path.rsplit("/", 1)[0] if path.endswith(("last.pt", "best.pt")) else path
            assert folder_of in cmd or path.endswith(".sha256"), (name, path)
        for script in scripts(stage):
            help_text = run([sys.executable, str(script), "--help"], ROOT).stdout
            assert "(default: data/" not in help_text and "(default: reports/" not in help_text


def test_matrix_items_are_checked_before_any_command_built_from_them_runs():
    """The study stage validates the lists; every other stage comes after it."""
    assert STAGES["study"]["params"] == [{"params.yaml": None}]  # all of it, so that a typo'd section is refused
    assert "reports/study.ok" in STAGES["source"]["deps"]
    assert all(re.search(r"\$\{item\.", STAGES[n]["cmd"]) for n in ("source", "repair", "train", "evaluate"))


def test_the_suite_plot_draws_the_published_sources_by_their_column_names():
    """The sources' column names are written in published_scores.tsv (and read into PUBLISHED_SOURCES) and,
    as DVC cannot import them, in dvc.yaml's suite plot: the two must agree."""
    from dtrepro.registry.datasets import PUBLISHED_SOURCES

    listed = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    plots = {next(iter(p)): next(iter(p.values())) for p in listed if isinstance(p, dict)}
    assert plots["results/suite.csv"]["y"] == [*PUBLISHED_SOURCES, "last_mean", "best_mean"]
