"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from dtrepro.collect.rollout import rollout
from dtrepro.data.d4rl import write_d4rl
from dtrepro.pipeline.commands import repo_env
from dtrepro.registry.datasets import dataset_file, published_text

from helpers import COLLECTED, HOPPER, ROOT, one_line, run, stages_ran

pytestmark = pytest.mark.slow
D = COLLECTED  # the smoke run's dataset
RUNS = [f"{D}-{k}-{s}" for k in (5, 1) for s in (0, 1)]  # DVC's names of its (dataset, K, seed) matrix items


def named(repo, name, *assignments, check=True):
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "run", name, *assignments], repo, timeout=900)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def dvc(repo, *args, check=True):
    proc = run(["dvc", *args], repo, timeout=900)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def up_to_date(repo) -> bool:
    return "Data and pipelines are up to date." in dvc(repo, "status").stdout


def test_the_named_smoke_run_is_a_dvc_experiment_of_the_whole_pipeline_offline(smoke_done):
    repo, out = smoke_done.repo, smoke_done.output
    runs = RUNS
    made = {"study", f"source@{D}", f"repair@{D}", f"render@{D}", f"hub@{D}", "report", "suite", "page"}
    assert stages_ran(out) == made | {f"{st}@{r}" for st in ("train", "evaluate") for r in runs}
    videos = json.loads((repo / f"results/videos/{D}/videos.json").read_text())["videos"]  # the K=5, seed 0 model's
    with open(repo / f"reports/eval/{D}/k5-seed0.csv") as f:
        first = {
            float(r["target"]): float(r["return"])
            for r in csv.DictReader(f)
            if r["checkpoint"] == "last" and r["episode"] == "0"
        }
    assert {v["target"]: v["return"] for v in videos} == first  # each caption: the evaluation's record
    assert 'id="episodes"' in (repo / "results" / "index.html").read_text()
    assert "the experiment 'smoke' holds this run" in out
    assert "smoke" in dvc(repo, "exp", "list", "-A", "--name-only").stdout.split()
    # DVC's view is the workspace's: nothing to run, params.yaml holds the values dvc.lock records
    assert up_to_date(repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["study"]["seeds"] == [0, 1]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock[f"train@{D}-5-0"]["params"]["params.yaml"]["model"]["embed_dim"] == 32
    shown = json.loads(dvc(repo, "exp", "show", "--json", "--all-commits").stdout)
    smoke = [e for base in shown for e in (base.get("experiments") or []) if e["name"] == "smoke"]
    assert len(smoke) == 1
    data = smoke[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["embed_dim"] == 32
    suite = json.loads((repo / "results" / "suite.json").read_text())
    summary = data["metrics"]["results/metrics.json"]["data"]  # DVC's metrics: the few numbers runs are compared by
    expected = {m: {c: round(suite[f"aggregate.{c}.{m}"], 2) for c in ("last", "best")} for m in ("mean", "iqm")}
    assert summary == {**expected, "references": "d4rl", "env": "Hopper-v4"}  # normalised with, and what ran
    assert f"> python stages/source.py --dataset {D}" in out
    source = json.loads((repo / "reports" / "source" / f"{D}.json").read_text())
    repair = json.loads((repo / "reports" / "repair" / f"{D}.json").read_text())
    assert source["source"] == "collect" and source["rows"] == repair["rows"]
    assert source["sha256"] == (repo / f"data/{D}/raw.hdf5.sha256").read_text().split()[0]
    assert source["workers"] >= 1 and source["blas_core"] and source["version/mujoco"] and source["cpu"]
    assert repair["episodes"] == source["dataset_episodes"] and repair["rows_changed_timeouts_added"] == 0
    assert json.loads((repo / "models" / D / "behaviour.json").read_text())["policies"]["medium"]["weights"]
    for r in runs:
        k, s = r.split("-")[-2:]
        assert (repo / f"models/{D}/k{k}-seed{s}/last.pt").exists() and (
            repo / f"models/{D}/k{k}-seed{s}/best.pt"
        ).exists()
        evaluation = json.loads((repo / f"reports/eval/{D}/k{k}-seed{s}.json").read_text())
        assert evaluation["context_len"] == int(k) and evaluation["train_seed"] == int(s)
    table = (repo / "results" / "ablations.md").read_text()
    for heading in (
        f"## {D} (Hopper-v4)",
        "### Headline: K = 5, target 3600",
        "### Return conditioning",
        "### Context length",
        "### Per training",
    ):
        assert heading in table
    cpu = " ".join(source["cpu"].split())  # as a literal shows it: on one line
    provenance = f"Data: SHA-256 `{source['sha256'][:16]}`…, collected on `{cpu}` (numpy SIMD"
    assert provenance in table and f"OpenBLAS kernels `{source['blas_core']}`) with MuJoCo" in table
    metrics = json.loads((repo / "results" / "ablations.json").read_text())
    assert {
        f"{D}.k5.last.target_3600.normalized_score_mean",
        f"{D}.k1.best.target_400.normalized_score_ci95_low",
    } <= set(metrics)
    per_seed = []  # the report's across-seed numbers, recomputed from the episode rows
    for seed in (0, 1):
        with open(repo / f"reports/eval/{D}/k5-seed{seed}.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["checkpoint"] == "last" and float(r["target"]) == 3600]
        per_seed.append(np.mean([float(r["normalized_score"]) for r in rows]))
    assert metrics[f"{D}.k5.last.target_3600.normalized_score_mean"] == pytest.approx(np.mean(per_seed))
    assert metrics[f"{D}.k5.last.target_3600.normalized_score_std_seeds"] == pytest.approx(np.std(per_seed))
    assert f"{np.mean(per_seed):.1f} ± {np.std(per_seed):.1f}" in table
    for png in ("return_conditioning", "context_length", "learning_curves"):
        assert (repo / "results" / "plots" / D / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "report: tables results/ablations.md" in out
    pngs = list((repo / "results" / "plots").rglob("*.png")) + list((repo / "results" / "suite-plots").rglob("*.png"))
    page = (repo / "results" / "index.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(pngs) > 3 and "Return conditioning" in page


def test_an_eval_change_reruns_only_evaluation_and_metrics_diff_shows_it(copy_done):
    """A researcher's loop after a named run, committed: change an eval param with DVC, diff the metrics."""
    repo = copy_done
    changed = dvc(repo, "exp", "run", "-S", "eval.seed=2000")
    # the study stage checks all of params.yaml; its stamp comes out the same, so it alone reruns nothing
    assert stages_ran(changed.stdout) == {f"evaluate@{r}" for r in RUNS} | {
        "study",
        f"render@{D}",
        f"hub@{D}",  # it scores Hugging Face models under the eval params (none here)
        "report",
        "suite",
        "page",
    }
    assert stages_ran(dvc(repo, "exp", "run", "-S", "eval.seed=2000").stdout) == set()
    assert up_to_date(repo)

    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert set(diff) == {"results/metrics.json"}  # the numbers runs are compared by; the rest are outputs
    score = diff["results/metrics.json"]["mean.last"]
    assert score["old"] != score["new"] and score["diff"] == pytest.approx(score["new"] - score["old"], abs=0.011)
    suite = json.loads((repo / "results/suite.json").read_text())
    assert score["new"] == round(suite["aggregate.last.mean"], 2)
    shown = json.loads(dvc(repo, "metrics", "show", "--json", "results/ablations.json").stdout)  # every number
    assert f"{D}.k5.last.target_3600.normalized_score_mean" in json.dumps(shown)
    wide = {"COLUMNS": "1000"}  # DVC's tables at their own width, not cut to a terminal's
    for cmd in (
        ["dvc", "metrics", "show"],
        ["dvc", "metrics", "diff"],
        [sys.executable, "-m", "dtrepro.pipeline.cli", "compare"],
    ):
        table = run(cmd, repo, env=wide).stdout
        assert "mean.last" in table and max(map(len, table.splitlines())) <= 120, (cmd, table)
    assert "eval.seed" in table and "1000" in table and "2000" in table  # compare: the param that changed


def test_dvc_plots_draw_a_line_per_dataset(copy_done):
    """The plot CSVs hold every dataset's rows: DVC's default template drew them as one zig-zag line."""
    shown = json.loads(dvc(copy_done, "plots", "show", "--json").stdout)["data"]
    for name in ("results/return_conditioning.csv", "results/context_length.csv"):
        content = shown[name][0]["content"]
        assert (
            content["encoding"]["color"]["field"] == "dataset" and content["encoding"]["strokeDash"]["field"] == "field"
        )
        assert {v["dataset"] for v in content["data"]["values"]} == {D}


def checkpoints(repo) -> dict[str, bytes]:
    return {r: (repo / "models" / D / "k{}-seed{}".format(*r.split("-")[-2:]) / "last.pt").read_bytes() for r in RUNS}


def test_an_edit_to_the_training_code_retrains_and_a_model_that_came_out_the_same_reevaluates_nothing(copy_done):
    """A code edit re-runs every train stage from scratch (the resume state is the old code's); on the CPU the
    weights come out byte for byte the same, so DVC re-runs no evaluation."""
    repo = copy_done
    before = checkpoints(repo)
    with open(repo / "stages" / "train.py", "a") as f:
        f.write("# an edit that changes nothing learnt\n")
    edited = dvc(repo, "exp", "run")
    # the report draws the learning curves, whose log holds the run's throughput: it alone runs again
    assert stages_ran(edited.stdout) == {f"train@{r}" for r in RUNS} | {"report"}
    assert edited.stdout.count("is from other params, data or code: starting afresh") == len(RUNS)
    assert checkpoints(repo) == before and up_to_date(repo)


def changed_stages(repo) -> set[str]:
    """The stages `dvc status` names as changed."""
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    return set(status)


@pytest.mark.parametrize(
    "edited, retrains",
    [
        ("src/dtrepro/runtime/errors.py", False),  # error wording
        ("src/dtrepro/runtime/threads.py", False),  # the thread choice
        ("src/dtrepro/runtime/progress.py", False),
        ("src/dtrepro/pipeline/named_runs.py", False),
        ("src/dtrepro/agent/model.py", True),
        ("src/dtrepro/training/loop.py", True),
        ("src/dtrepro/training/sampler.py", True),
    ],
)
def test_a_plumbing_edit_reruns_no_stage_and_an_edit_to_the_science_retrains(copy_done, edited, retrains):
    """The deps are the modules that decide a stage's outputs: an edit to how a stage runs changes none of
    them; an edit to the model, the loop or the sampler puts every train stage out of date."""
    repo = copy_done
    with open(repo / edited, "a") as f:
        f.write("\nEDITED = 1  # an edit\n")
    changed = changed_stages(repo)
    assert (changed >= {f"train@{r}" for r in RUNS}) if retrains else changed == set(), changed


def test_two_named_runs_at_once_the_second_is_refused(copy_done):
    repo = copy_done
    first = subprocess.Popen(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", "eval.seed=3000"],
        cwd=repo,
        env=repo_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = repo / ".dvc" / "tmp" / "named-run.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and "PID" in lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = named(repo, "smoke", "-S", "eval.seed=4000", check=False)
    out, _ = first.communicate(timeout=900)
    assert second.returncode == 2 and "Another named run is running" in one_line(second.stderr)
    assert first.returncode == 0, out
    assert yaml.safe_load((repo / "params.yaml").read_text())["eval"]["seed"] == 3000
    lock_file = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock_file[f"evaluate@{D}-5-0"]["params"]["params.yaml"]["eval"]["seed"] == 3000
    assert up_to_date(repo)


def test_matrix_items_never_reach_the_shell(repo_copy, tmp_path):
    pwned = tmp_path / "pwned"
    proc = dvc(repo_copy, "exp", "run", "-S", f"study.context_lens=['5; touch {pwned} #']", check=False)
    assert proc.returncode != 0
    assert "study.context_lens.0 is '5; touch" in one_line(proc.stdout + proc.stderr)
    assert not pwned.exists()


def test_the_queue_recipe_runs_offline_on_a_named_run(copy_done):
    repo = copy_done
    # copy_done is committed: the queued experiments start from the smoke run's results
    dvc(repo, "exp", "run", "--queue", "-S", "eval.seed=5000,6000")
    dvc(repo, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    seeds = [
        e["revs"][0]["data"]["params"]["params.yaml"]["data"]["eval"]["seed"]
        for base in shown
        for e in (base.get("experiments") or [])
    ]
    assert {5000, 6000} <= set(seeds)


def test_download_source_runs_download_and_repair_and_caches(repo_copy, hopper_file, hopper):
    """A file of one's own through the download source: its hash check turned off, and the metrics say so."""
    h = HOPPER
    sets = ["-S", f"study.datasets=[{h}]", "-S", f"data.url={hopper_file}", "-S", "data.check_sha256=false"]
    out = named(repo_copy, "smoke", *sets).stdout  # the whole pipeline on it, with the smoke profile's sizes
    assert f"> python stages/source.py --dataset {h}" in out and f"Running stage 'repair@{h}'" in out
    source = json.loads((repo_copy / "reports" / "source" / f"{h}.json").read_text())
    assert source["sha256_checked"] is False and source["dataset"] == h
    report = json.loads((repo_copy / "reports" / "repair" / f"{h}.json").read_text())
    assert report["episodes"] == int((hopper[1] | hopper[2]).sum())
    assert (repo_copy / "data" / h / "raw.hdf5").read_bytes() == hopper_file.read_bytes()

    assert stages_ran(named(repo_copy, "smoke", *sets).stdout) == set()  # nothing changed, nothing runs
    changed = dvc(repo_copy, "exp", "run", "-S", "repair.max_episode_steps=500", f"repair@{h}").stdout
    assert stages_ran(changed) == {"study", f"repair@{h}"}
    assert json.loads((repo_copy / "reports" / "repair" / f"{h}.json").read_text())["boundaries_time_limit"] > 0
    assert "boundaries_time_limit" in dvc(repo_copy, "metrics", "show", "--json", f"reports/repair/{h}.json").stdout


def test_every_dep_exists_or_is_made_by_a_stage():
    text = (ROOT / "dvc.yaml").read_text()
    for item, value in (("dataset", "<D>"), ("context_len", "<K>"), ("seed", "<S>")):
        text = text.replace(f"${{item.{item}}}", value)
    stages = yaml.safe_load(text)["stages"]
    produced = {
        o if isinstance(o, str) else next(iter(o))
        for s in stages.values()
        for key in ("outs", "metrics", "plots")
        for o in s.get(key, [])
    }
    for stage in stages.values():
        for dep in set(stage["deps"]) - produced:
            made_by_others = any(p.startswith(dep + "/") for p in produced)  # a folder of other stages' outputs
            assert "${" in dep or made_by_others or (ROOT / dep).exists(), dep


def write_as_d4rl_v2(path: Path, env_id: str, rows: int, seed: int) -> None:
    """Real rollouts of uniformly random actions, written as D4RL's v2 files are: `metadata/*` as HDF5 datasets
    (algorithm, iteration, policy weights), `infos/*` float64, and the last episode cut with neither flag."""
    rng = np.random.default_rng(seed)
    data = rollout(env_id, lambda obs: rng.uniform(-1, 1, 6), rows, seed=seed, flag_last=False)
    data.arrays.update({k: v.astype(np.float64) for k, v in data.arrays.items() if k.startswith("infos/")})
    data.metadata = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_d4rl(path, data)
    with h5py.File(path, "a") as f:
        del f["metadata"]
        f["metadata/algorithm"] = np.bytes_("SAC")
        f["metadata/iteration"] = np.int64(1_000_000)
        f["metadata/policy/fc0/weight"] = rng.standard_normal((256, 17)).astype(np.float32)


def test_each_d4rl_name_alone_picks_its_env_targets_and_references(repo_copy, tmp_path):
    """Walker2d-v4 and HalfCheetah-v4 files in D4RL's v2 layout, in a mirror folder under D4RL's own paths, with
    only study.datasets naming them (D4RL's server off: the test is offline): each is trained and evaluated on its
    own env at the paper's targets for it, and the report prints that dataset's published scores."""
    mirror = tmp_path / "mirror"
    names = {"walker2d-medium-replay-v2": "Walker2d-v4", "halfcheetah-medium-v2": "HalfCheetah-v4"}
    for i, (name, env_id) in enumerate(names.items()):
        write_as_d4rl_v2(mirror / dataset_file(name).path, env_id, 2500, seed=i)
    sets = [f"study.datasets=[{','.join(names)}]", f"data.mirrors=[{mirror}]", "data.d4rl_server=false"]
    sets += ["data.check_sha256=false", "eval.targets=null"]  # the smoke profile's targets are Hopper's
    out = named(repo_copy, "smoke", *(x for s in sets for x in ("-S", s))).stdout
    assert "NOT checked (data.check_sha256: false)" in out
    table = " ".join((repo_copy / "results/ablations.md").read_text().split())
    for (name, env_id), targets in zip(names.items(), [(5000, 2500, 556), (12000, 6000, 1333)], strict=True):
        evaluation = json.loads((repo_copy / f"reports/eval/{name}/k5-seed0.json").read_text())
        assert evaluation["env_id"] == env_id
        assert {f"last.target_{t}.return_mean" for t in targets} <= set(evaluation)
        repair = json.loads((repo_copy / f"reports/repair/{name}.json").read_text())
        assert repair["rows"] == 2500 and repair["trailing_episode_cut"]
        source = json.loads((repo_copy / f"reports/source/{name}.json").read_text())
        assert source["url"] == str(mirror / dataset_file(name).path) and source["sha256_checked"] is False
        assert f"Data: SHA-256 `{source['sha256'][:16]}`…, downloaded from `{source['url']}`." in table
        paper, last, best = published_text(name)
        assert f"## {name} ({env_id})" in table
        assert f"{name}: Decision Transformer paper (Chen et al., 2021, Table 2, 3 seeds) {paper}" in table
    halfcheetah = json.loads((repo_copy / "reports/repair/halfcheetah-medium-v2.json").read_text())
    assert halfcheetah["boundaries_terminal_flag"] == 0  # HalfCheetah never terminates: time limits and the cut alone
    assert up_to_date(repo_copy)
