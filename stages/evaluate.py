"""evaluate stage: run one trained model's last and best checkpoints for eval.episodes episodes per target.

dvc.yaml runs it once per (context length, seed) of params.yaml's study section. All episodes of a
checkpoint step together: one model forward per timestep for every live episode.
Reads  models/k<K>-seed<S>/last.pt and best.pt; params.yaml eval.*; --context-len K --seed S
       (default: the first of study.context_lens and of study.seeds)
Writes reports/eval/k<K>-seed<S>.csv (one row per episode: checkpoint, target, seed, return, length, score)
       reports/eval/k<K>-seed<S>.json (metrics: return and normalised score statistics with a 95% bootstrap
       CI per checkpoint and target, under keys such as last.target_3600.normalized_score_mean)
"""

import argparse

from dtrepro.errors import run_stage
from dtrepro.evaluate import EvalParams, evaluate_checkpoints, metric_key
from dtrepro.params import section
from dtrepro.runs import add_run_arguments, run_from_arguments


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    add_run_arguments(parser)
    parser.add_argument("--checkpoints", help="folder of last.pt and best.pt (default: models/k<K>-seed<S>)")
    parser.add_argument("--episodes-csv", help="(default: reports/eval/k<K>-seed<S>.csv)")
    parser.add_argument("--metrics", help="(default: reports/eval/k<K>-seed<S>.json)")
    args = parser.parse_args(argv)
    run = run_from_arguments(args)
    params = EvalParams.from_dict(section(args.params, "eval"))
    metrics = evaluate_checkpoints(
        args.checkpoints or run.checkpoint_dir,
        params,
        args.metrics or run.eval_metrics,
        args.episodes_csv or run.eval_episodes,
    )
    t0 = params.targets[0]
    scores = ", ".join(f"{c}.pt {metrics[metric_key(c, t0, 'normalized_score_mean')]:.1f}" for c in ("last", "best"))
    print(f"evaluate {run.name}: {params.env_id}, target {t0:g}, {params.episodes} episodes: {scores}")


if __name__ == "__main__":
    run_stage(main)
