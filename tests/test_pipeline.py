"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from conftest import ROOT, run

pytestmark = pytest.mark.slow


def repro(repo, *extra):
    cmd = [sys.executable, "-m", "dtrepro.profiles", "run", "smoke", *extra, "--", "dvc", "repro"]
    proc = run(cmd, repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_smoke_profile_collects_offline_and_repairs(repo_copy):
    out = repro(repo_copy)
    assert "Running stage 'source'" in out and "> python stages/collect.py" in out
    source = json.loads((repo_copy / "reports" / "source.json").read_text())
    repair = json.loads((repo_copy / "reports" / "repair.json").read_text())
    assert source["source"] == "collect" and source["rows"] == repair["rows"]
    assert repair["episodes"] == source["dataset_episodes"] and repair["rows_changed_timeouts_added"] == 0
    assert json.loads((repo_copy / "models" / "behaviour.json").read_text())["weights"]
    assert (repo_copy / "params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()


def test_download_source_runs_download_and_repair_and_caches(repo_copy, hopper_file, hopper):
    source, url = "data.source=download", f"data.url={hopper_file}"
    out = repro(repo_copy, "-S", source, "-S", url)
    assert "> python stages/download.py" in out and "Running stage 'repair'" in out
    report = json.loads((repo_copy / "reports" / "repair.json").read_text())
    assert report["episodes"] == int((hopper[1] | hopper[2]).sum())
    assert (repo_copy / "data" / "clean.hdf5").exists()
    assert (repo_copy / "data" / "raw.hdf5").read_bytes() == hopper_file.read_bytes()

    again = repro(repo_copy, "-S", source, "-S", url)
    assert "Running stage" not in again  # nothing changed, nothing runs

    changed = repro(repo_copy, "-S", source, "-S", url, "-S", "repair.max_episode_steps=500")
    assert "Running stage 'repair'" in changed and "Running stage 'source'" not in changed
    assert json.loads((repo_copy / "reports" / "repair.json").read_text())["boundaries_time_limit"] > 0

    metrics = run(["dvc", "metrics", "show", "--json"], repo_copy)
    assert metrics.returncode == 0 and "boundaries_time_limit" in metrics.stdout


def test_stage_defaults_match_dvc_yaml():
    """Every stage runs with no arguments inside DVC: its default paths are dvc.yaml's."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    produced = {o if isinstance(o, str) else next(iter(o)) for s in stages.values() for o in s.get("outs", [])}
    for stage in stages.values():
        scripts = [stage["cmd"].split()[1].replace("${data.source}", s) for s in ("download", "collect")]
        for script in set(scripts):
            help_text = run([sys.executable, str(ROOT / script), "--help"], ROOT).stdout
            for out in stage.get("outs", []) + stage.get("metrics", []):
                path = out if isinstance(out, str) else next(iter(out))
                if not path.endswith(".sha256"):
                    assert path in help_text, (script, path)
        for dep in set(stage["deps"]) - produced:
            assert "${" in dep or (ROOT / dep).exists(), dep
