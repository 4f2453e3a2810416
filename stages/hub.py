"""hub stage: score the Hugging Face Decision Transformers of params.yaml's hf.models as the study's models are scored.

dvc.yaml runs it once per dataset of params.yaml's study section; the folders are scored by the stage of
hf.dataset (null: the study's first), the others write an empty evaluation.
Reads  the hub/ folders hf.models names (transformers' `save_pretrained` layout); --data (the repaired
       dataset: its states' statistics when hf.state_mean is null, its reference scores); params.yaml hf.*,
       eval.*, data.env_version; --dataset NAME
Writes --episodes-csv (one row per episode: folder, target, seed, return, length, score) and --metrics
       (JSON: per folder and target, returns and normalised scores with a 95% bootstrap CI)
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from pathlib import Path

from dtrepro.evaluation.imported import evaluate_hub_folders
from dtrepro.evaluation.results import metric_key
from dtrepro.params import EvalParams, HubParams, StudyParams, add_dataset_argument, add_params_argument
from dtrepro.runtime.atomic import outputs_together


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument("--data", required=True, type=Path, help="e.g. data/hopper-medium-v2/clean.hdf5")
    parser.add_argument("--episodes-csv", required=True, type=Path, help="e.g. reports/hub/hopper-medium-v2.csv")
    parser.add_argument("--metrics", required=True, type=Path, help="e.g. reports/hub/hopper-medium-v2.json")
    args = parser.parse_args(argv)
    params, hf = EvalParams.from_params(args.params, args.dataset), HubParams.from_params(args.params)
    folders = hf.models if hf.dataset_of(StudyParams.from_params(args.params)) == args.dataset else []
    with outputs_together(args.episodes_csv, args.metrics):
        metrics = evaluate_hub_folders(
            folders, params, hf, args.data, args.metrics, args.episodes_csv, dataset=args.dataset
        )
    for folder in folders:
        score = metrics[metric_key(folder, params.targets[0], "normalized_score_mean")]
        print(f"hub {folder}: {params.env_id}, target {params.targets[0]:g}, {params.episodes} episodes: {score:.1f}")
    if not folders:
        print(f"hub {args.dataset}: no Hugging Face models to score (hf.models)")


if __name__ == "__main__":
    run_stage(main)
