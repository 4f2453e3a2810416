"""train stage: fit one Decision Transformer of the study; keep its last and its best checkpoint.

dvc.yaml runs it once per (context length, seed) of params.yaml's study section.
Reads  data/clean.hdf5; params.yaml model.*, train.*; --context-len K --seed S (default: the first
       of study.context_lens and of study.seeds)
Writes models/k<K>-seed<S>/last.pt (resumable: optimizer, scheduler and RNG state),
       models/k<K>-seed<S>/best.pt (best periodic evaluation),
       reports/train/k<K>-seed<S>.tsv (loss, lr, throughput, evaluations; dvc plots),
       reports/train/k<K>-seed<S>.json (metrics)
Killed at any moment, the stage resumes from last.pt when run again with the same params and data.
Under `torchrun --nproc_per_node=N stages/train.py` it trains with DDP; rank 0 writes.
"""

import argparse

from dtrepro.errors import run_stage
from dtrepro.params import section
from dtrepro.runs import add_run_arguments, run_from_arguments
from dtrepro.train import TrainConfig, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    add_run_arguments(parser)
    parser.add_argument("--data", default="data/clean.hdf5", help="(default: data/clean.hdf5)")
    parser.add_argument("--out-dir", help="folder of last.pt and best.pt (default: models/k<K>-seed<S>)")
    parser.add_argument("--log-file", help="(default: reports/train/k<K>-seed<S>.tsv)")
    parser.add_argument("--metrics", help="(default: reports/train/k<K>-seed<S>.json)")
    args = parser.parse_args(argv)
    run = run_from_arguments(args)
    cfg = TrainConfig.from_params(
        section(args.params, "model"), section(args.params, "train"), run.context_len, run.seed
    )
    metrics = train(
        cfg,
        args.data,
        args.out_dir or run.checkpoint_dir,
        args.log_file or run.train_log,
        args.metrics or run.train_metrics,
    )
    if metrics:  # rank 0
        best = metrics["best_eval_score"]
        print(f"train {run.name}: {metrics['steps']} steps on {metrics['device']}; best evaluation {best}")


if __name__ == "__main__":
    run_stage(main)
