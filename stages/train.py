"""train stage: fit one Decision Transformer of the study; keep its last and its best checkpoint.

dvc.yaml runs it once per (dataset, context length, seed) of params.yaml's study section.
Reads  --data (a clean D4RL file); params.yaml model.*, train.*, data.env_version; --dataset NAME
       --context-len K --seed S
Writes --out-dir/last.pt (the final weights) and --out-dir/best.pt (the best periodic evaluation), at the end;
       --log-file (TSV: loss, lr, throughput, evaluations; dvc plots), --metrics (JSON)
Keeps  --out-dir/.resume/state.pt, no output of DVC's: every train.checkpoint_every steps the optimizer,
       scheduler and RNG states and the log so far. Killed at any moment, the stage resumes from it when run
       again with the same code, params and data; with a complete one it writes its outputs without training.
Under `torchrun --nproc_per_node=N stages/train.py ...` it trains with DDP; rank 0 writes.
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from pathlib import Path

from dtrepro.params import Run, TrainParams, add_params_argument, add_run_arguments
from dtrepro.pipeline.closure import code_sha256
from dtrepro.training.loop import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_run_arguments(parser)
    parser.add_argument("--data", required=True, help="clean D4RL file, e.g. data/hopper-medium-v2/clean.hdf5")
    parser.add_argument(
        "--out-dir", required=True, help="folder of last.pt and best.pt, e.g. models/hopper-medium-v2/k20-seed0"
    )
    parser.add_argument("--log-file", required=True, help="e.g. reports/train/hopper-medium-v2/k20-seed0.tsv")
    parser.add_argument("--metrics", required=True, help="e.g. reports/train/hopper-medium-v2/k20-seed0.json")
    args = parser.parse_args(argv)
    run = Run(args.context_len, args.seed)
    params = TrainParams.from_params(args.params, args.dataset)
    metrics = train(
        params,
        run,
        args.data,
        args.out_dir,
        args.log_file,
        args.metrics,
        code_sha256(Path(__file__)),
        dataset=args.dataset,
    )
    if metrics:  # rank 0
        best = metrics["best_eval_score"]
        best = "none finite" if best is None else f"{best:.1f}"
        print(
            f"train {args.dataset} {run.name}: {metrics['steps']} steps on {metrics['device']}; best evaluation {best}"
        )


if __name__ == "__main__":
    run_stage(main)
