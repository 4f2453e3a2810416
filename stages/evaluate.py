"""evaluate stage: run one trained model's last and best checkpoints for eval.episodes episodes per target.

dvc.yaml runs it once per (dataset, context length, seed) of params.yaml's study section. All episodes of a
checkpoint step together: one model forward per timestep for every live episode.
Reads  --checkpoints/last.pt and best.pt; params.yaml eval.*, data.env_version; --dataset NAME
Writes --episodes-csv (one row per episode: checkpoint, target, seed, return, length, score)
       --metrics (JSON: return and normalised score statistics with a 95% bootstrap CI per checkpoint
       and target, under keys such as last.target_3600.normalized_score_mean)
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse

from dtrepro.evaluation.evaluate import evaluate_checkpoints
from dtrepro.evaluation.results import metric_key
from dtrepro.params import EvalParams, add_dataset_argument, add_params_argument


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument(
        "--checkpoints", required=True, help="folder of last.pt and best.pt, e.g. models/hopper-medium-v2/k20-seed0"
    )
    parser.add_argument("--episodes-csv", required=True, help="e.g. reports/eval/hopper-medium-v2/k20-seed0.csv")
    parser.add_argument("--metrics", required=True, help="e.g. reports/eval/hopper-medium-v2/k20-seed0.json")
    args = parser.parse_args(argv)
    params = EvalParams.from_params(args.params, args.dataset)
    metrics = evaluate_checkpoints(args.checkpoints, params, args.metrics, args.episodes_csv, dataset=args.dataset)
    t0 = params.targets[0]
    scores = ", ".join(f"{c}.pt {metrics[metric_key(c, t0, 'normalized_score_mean')]:.1f}" for c in ("last", "best"))
    print(f"evaluate {args.checkpoints}: {params.env_id}, target {t0:g}, {params.episodes} episodes: {scores}")


if __name__ == "__main__":
    run_stage(main)
