"""The `dtrepro` command: named runs, sharing results through a DVC remote, and the study on a Slurm cluster.

    dtrepro list                              the named runs (profiles/*.yaml)
    dtrepro run demo [-S eval.episodes=5]     run one as the DVC experiment of its name
    dtrepro show demo                         params.yaml as that named run makes it
    dtrepro push | dtrepro pull               data, models and the run-cache to / from the DVC remote
    dtrepro verify [STAGE ...]                run stages again (a sample of evaluate stages) and compare
    dtrepro cluster submit suite --gres gpu:1 --wait    the study as Slurm jobs, the report in this workspace
    dtrepro cluster status suite              how that submission's jobs ended
    dtrepro cluster plan suite                the spec alone, for another scheduler (a Kubernetes Indexed Job)

A named run takes the committed params.yaml, puts profiles/NAME.yaml and any -S values on top, and
hands what differs to `dvc exp run -n NAME -S ...`: DVC runs what changed, or restores it from its
run-cache, and records the experiment, so `dvc status`, `dvc exp show` and `dvc metrics diff` stay true.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dtrepro.runtime.stage import run_stage


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 would silently mean "no limit" to sbatch)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _named(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a named run: a profile of profiles/ (dtrepro list), or 'default'")
    parser.add_argument("-S", "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")


def parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(prog="dtrepro", description=__doc__, formatter_class=raw)
    top.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: .)")
    sub = top.add_subparsers(dest="verb", required=True)
    sub.add_parser("list", help="list the named runs: what each is and how long it takes")
    show = sub.add_parser("show", help="print params.yaml as the named run would make it")
    _named(show)
    show.add_argument("--diff", action="store_true", help="only the values it changes in the committed params.yaml")
    go = sub.add_parser("run", help="run a named set of values as the DVC experiment of that name")
    _named(go)
    go.add_argument("targets", nargs="*", help="stages to run (default: the whole pipeline), e.g. report")
    go.add_argument("--pull", action="store_true", help="fetch from the DVC remote what the run-cache restores")
    compare = sub.add_parser("compare", help="the last commit's experiments side by side: what differs, in 80 columns")
    compare.add_argument("--all", action="store_true", help="every param and metric, not only what differs")
    compare.add_argument("--width", type=positive, default=80, help="the columns to fit (default 80)")
    for verb, text in (("push", "to"), ("pull", "from")):
        remote = sub.add_parser(verb, help=f"data, models and the run-cache {text} the DVC remote")
        remote.add_argument("-r", "--remote", help="a DVC remote's name (default: the default remote)")
    check = sub.add_parser("verify", help="run stages again in a scratch folder; compare with what was restored")
    check.add_argument(
        "stages", nargs="*", help="stages to verify, e.g. evaluate@hopper-medium-v2-20-0 (default: a sample)"
    )
    check.add_argument("--sample", type=int, default=1, help="how many evaluate stages to sample (default 1)")
    check.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    export = sub.add_parser("export-hf", help="a trained model as a Hugging Face DecisionTransformerModel folder")
    export.add_argument("model_dir", type=Path, help="a model's folder, e.g. models/hopper-medium-v2/k20-seed0")
    export.add_argument("out", type=Path, help="the folder to write (config.json, model.safetensors, README.md)")
    export.add_argument("--checkpoint", choices=("last", "best"), default="last", help="which one (default last)")
    cluster = sub.add_parser("cluster", help="the study on a Slurm cluster").add_subparsers(dest="job", required=True)
    submit = cluster.add_parser("submit", help="submit the named run's prep job, model array and report job")
    plan = cluster.add_parser("plan", help="write the spec only, for another scheduler (a Kubernetes Indexed Job)")
    _named(submit)
    _named(plan)
    for option, kind, text in (
        ("--partition", str, "Slurm partition"),
        ("--time", str, "time limit per job, e.g. 02:00:00"),
        ("--gres", str, "generic resources of each training task, e.g. gpu:1"),
        ("--cpus-per-task", positive, "CPUs of each job (default 1)"),
        ("--mem", str, "memory of each job, e.g. 16G"),
        ("--max-parallel", positive, "training tasks running at once (default: as many as Slurm allows)"),
    ):
        submit.add_argument(option, type=kind, help=text)
    submit.add_argument("--wait", action="store_true", help="wait for the jobs, then say how each ended")
    status = cluster.add_parser("status", help="how the jobs of a submission ended, by model")
    status.add_argument("name", help="the named run submitted")
    for job in ("prep", "task", "finish"):
        run = cluster.add_parser(job, help=f"the {job} job itself (what the submitted scripts run)")
        run.add_argument("folder", type=Path, help="the submission's folder, .dvc/tmp/cluster/NAME")
        if job == "task":
            run.add_argument("--index", type=int, help="the model's index (default: the array task's)")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    root = args.root.resolve()
    if args.verb in ("list", "show", "run"):
        from dtrepro.pipeline import named_runs

        if args.verb == "list":
            print("\n".join(named_runs.describe(root, name) for name in named_runs.names(root)))
        elif args.verb == "show" and args.diff:
            changed = named_runs.changes(root, args.name, args.assignments)
            print("\n".join(f"{k}: {v!r}" for k, v in changed.items()) or f"{args.name} changes nothing")
        elif args.verb == "show":
            print(yaml.safe_dump(named_runs.resolve(root, args.name, args.assignments), sort_keys=False), end="")
        elif code := named_runs.run(root, args.name, args.assignments, args.targets, ["--pull"] * args.pull):
            sys.exit(code)
    elif args.verb == "compare":
        from dtrepro.pipeline.compare import experiments, table

        print(table(experiments(root), args.all, args.width), end="")
    elif args.verb == "verify":
        from dtrepro.pipeline.verify import verify

        verdicts = verify(root, args.stages, args.sample, args.seed)
        bad = [v.stage for v in verdicts if not v.ok]
        print(f"verify: {len(verdicts) - len(bad)} of {len(verdicts)} stages agree with what was restored")
        if bad:
            print(f"verify: {', '.join(bad)} gave other outputs than the workspace holds", file=sys.stderr)
            sys.exit(1)
    elif args.verb == "export-hf":
        from dtrepro.reporting.card import export

        out = export(root, args.model_dir, args.out, args.checkpoint)
        print(f"export-hf: {out} (upload it with `huggingface-cli upload NAME {out}`)")
    elif args.verb in ("push", "pull"):
        from dtrepro.pipeline import remote

        done = getattr(remote, args.verb)(root, args.remote)
        print(f"{args.verb}: {done}")
    else:
        cluster(root, args)


def cluster(root: Path, args: argparse.Namespace) -> None:
    from dtrepro.pipeline.cluster import jobs, slurm
    from dtrepro.pipeline.cluster.spec import Resources, job_folder

    if args.job == "plan":
        spec = slurm.plan(root, args.name, args.assignments, Resources())
        print(f"cluster: {spec.folder}: run `dtrepro cluster prep` on it, then `dtrepro cluster task` with indices ")
        print(f"0 to {len(spec.models) - 1} (JOB_COMPLETION_INDEX), then `dtrepro cluster finish`")
    elif args.job == "submit":
        options = ("partition", "time", "gres", "cpus_per_task", "mem", "max_parallel")
        resources = Resources(**{k: getattr(args, k) for k in options if getattr(args, k) is not None})
        ids = slurm.submit(root, args.name, args.assignments, resources)
        print(f"cluster: submitted {args.name}: prep job {ids['prep']}, array {ids['array']}, report {ids['finish']}")
        if args.wait:
            try:
                slurm.wait(ids)
            except KeyboardInterrupt:
                print(
                    f"cluster: stopped waiting; the jobs ({', '.join(ids.values())}) go on running on the cluster. "
                    f"`dtrepro cluster status {args.name}` says how they ended; `scancel {' '.join(ids.values())}` "
                    f"stops them.",
                    file=sys.stderr,
                )
                sys.exit(130)
            ok, text = slurm.report(job_folder(root, args.name))
            print(text)
            if not ok:
                sys.exit(1)
    elif args.job == "status":
        ok, text = slurm.report(job_folder(root, args.name))
        print(text)
        sys.exit(0 if ok else 1)
    elif args.job == "task":
        jobs.task(args.folder, args.index)
    else:
        getattr(jobs, args.job)(args.folder)


def entry() -> None:
    """The console script."""
    run_stage(main)


if __name__ == "__main__":
    entry()
