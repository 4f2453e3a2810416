"""dvc.yaml agrees with the code: each stage's deps are its command's imports, its params the keys that
change its results, and every path a script uses comes from the stage's command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from dtrepro.pipeline.closure import DATA_SUFFIXES, closure

from helpers import ROOT, run

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def scripts(stage: dict) -> list[Path]:
    return [ROOT / stage["cmd"].split()[1]]


def code_deps(stage: dict) -> set[str]:
    """The stage's deps that are project code (Python files and package folders)."""
    return {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}


def as_deps(files: set[Path], root: Path = ROOT) -> set[str]:
    """Files as dvc.yaml deps: a package folder stands for all its files when every one is imported;
    empty __init__.py files (which change nothing) are left out."""
    files = {f for f in files if not (f.name == "__init__.py" and not (root / f).read_text().strip())}
    deps = {str(f) for f in files}
    for folder in {f.parent for f in files if f.parent != Path("src/dtrepro") and f.parts[0] == "src"}:
        members = {p.relative_to(root) for p in (root / folder).iterdir() if p.suffix in (".py", *DATA_SUFFIXES)}
        members = {f for f in members if not (f.name == "__init__.py" and not (root / f).read_text().strip())}
        if members and members <= files:
            deps = {d for d in deps if Path(d).parent != folder} | {str(folder)}
    return deps


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


def test_train_and_evaluate_list_whole_sections_and_no_stage_lists_the_run_section():
    """`run` (device, log interval) changes no result: no stage but the study (which checks every section) lists
    it, so an edit there re-runs nothing; train and evaluate list their sections whole."""
    for name, stage in STAGES.items():
        keys = [next(iter(k)) if isinstance(k, dict) else k for k in stage.get("params", [])]
        assert name == "study" or not [k for k in keys if k.split(".")[0] == "run"], (name, keys)
    assert set(STAGES["train"]["params"]) == {"data.env_version", "model", "train"}
    assert set(STAGES["evaluate"]["params"]) == {"data.env_version", "eval"}


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
