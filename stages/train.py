"""train stage: fit a Decision Transformer to the clean dataset; keep the last and the best checkpoint.

Reads  data/clean.hdf5; params.yaml model.*, train.*
Writes models/last.pt (resumable: optimizer, scheduler and RNG state), models/best.pt (best periodic
       evaluation), reports/train_log.tsv (loss, lr, throughput, evaluations; dvc plots),
       plots/learning_curve.png, reports/train.json (metrics)
Killed at any moment, the stage resumes from models/last.pt when run again with the same params and data.
Under `torchrun --nproc_per_node=N stages/train.py` it trains with DDP; rank 0 writes.
"""

import argparse

from dtrepro.errors import run_stage
from dtrepro.params import section
from dtrepro.train import TrainConfig, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    parser.add_argument("--data", default="data/clean.hdf5", help="(default: data/clean.hdf5)")
    parser.add_argument(
        "--out-dir",
        default="models",
        help="folder of the checkpoints (default: models, so models/last.pt and models/best.pt)",
    )
    parser.add_argument("--log-file", default="reports/train_log.tsv", help="(default: reports/train_log.tsv)")
    parser.add_argument("--plot", default="plots/learning_curve.png", help="(default: plots/learning_curve.png)")
    parser.add_argument("--metrics", default="reports/train.json", help="(default: reports/train.json)")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_params(section(args.params, "model"), section(args.params, "train"))
    metrics = train(cfg, args.data, args.out_dir, args.log_file, args.plot, args.metrics)
    if metrics:  # rank 0
        print(f"train: {metrics['steps']} steps on {metrics['device']}; best evaluation {metrics['best_eval_score']}")


if __name__ == "__main__":
    run_stage(main)
