"""source stage: get one dataset of study.datasets, by its name -- D4RL's file, or one made here offline.

A D4RL name (hopper-medium-v2) is downloaded, resumably, from D4RL's server or data.mirrors and
checked against its published size and hash; a name collected-<env>-<kind> is made here: ARS trains a
behaviour policy on the CPU, which is rolled out the way D4RL made that kind (src/dtrepro/collect/dataset.py).
Reads  params.yaml data.* (download), collect.* (collect); --dataset NAME
Writes --output (D4RL layout) and <output>.sha256, --policy (the behaviour policies, or what is known
       of D4RL's), --metrics (JSON). A dropped download leaves <output>.part, which the next run resumes.
"""

import argparse

from dtrepro.collect.dataset import CollectParams, collect_to_files
from dtrepro.data.download import DownloadParams, download_to_files
from dtrepro.datasets import lookup
from dtrepro.errors import run_stage
from dtrepro.params import add_dataset_argument, add_params_argument


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument("--output", required=True, help="the dataset, e.g. data/hopper-medium-v2/raw.hdf5")
    parser.add_argument("--policy", required=True, help="e.g. models/hopper-medium-v2/behaviour.json")
    parser.add_argument("--metrics", required=True, help="e.g. reports/source/hopper-medium-v2.json")
    args = parser.parse_args(argv)
    if lookup(args.dataset).source == "download":
        result = download_to_files(DownloadParams.from_params(args.params, args.dataset), *paths(args))
        checked = "checked" if result["sha256_checked"] else "NOT checked (data.check_sha256: false)"
        print(f"download: {result['url']} -> {args.output} (sha256 {result['sha256']}, {checked})")
    else:
        result = collect_to_files(CollectParams.from_params(args.params, args.dataset), *paths(args))
        policies = "; ".join(
            f"{name} policy score {result[f'{name}_normalized_mean']:.1f} after {result[f'{name}_env_steps']:,} "
            f"env steps"
            for name in ("medium", "expert")
            if f"{name}_env_steps" in result
        )
        print(
            f"collect {args.dataset}: {policies or 'random actions'}; {result['rows']:,} rows, "
            f"{result['dataset_episodes']:,} episodes -> {args.output} (sha256 {result['sha256']})"
        )


def paths(args) -> tuple[str, str, str]:
    return args.output, args.policy, args.metrics


if __name__ == "__main__":
    run_stage(main)
