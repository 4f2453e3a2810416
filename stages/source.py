"""source stage: get one dataset of study.datasets, by its name -- D4RL's file, Minari's, or one made here.

A D4RL name (hopper-medium-v2) is downloaded, resumably, from D4RL's server or data.mirrors and
checked against its published size and hash; a Minari id (mujoco/hopper/medium-v0) is loaded with the
minari package from the local Minari folder or Minari's remote and flattened; a name
collected-<env>-<kind> is made here: ARS trains a behaviour policy on the CPU, which is rolled out the
way D4RL made that kind (src/dtrepro/collect/dataset.py). Whatever the source, the file is also written
as a Minari dataset (--minari-dir, a Minari datasets folder) for Minari-based tools.
Reads  params.yaml data.* (download, minari), collect.* (collect); --dataset NAME
Writes --output (D4RL layout) and <output>.sha256, --policy (the behaviour policies, or what is known
       of them), --metrics (JSON), --minari-dir/<minari id>/. A dropped download leaves <output>.part,
       which the next run resumes.
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse

from dtrepro.collect.collector import collect_to_files
from dtrepro.data.download import download_to_files
from dtrepro.data.minari_import import export_file, minari_id, minari_to_files
from dtrepro.params import CollectParams, DownloadParams, add_dataset_argument, add_params_argument
from dtrepro.registry.datasets import env_id, lookup
from dtrepro.runtime.atomic import outputs_together


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument("--output", required=True, help="the dataset, e.g. data/hopper-medium-v2/raw.hdf5")
    parser.add_argument("--policy", required=True, help="e.g. models/hopper-medium-v2/behaviour.json")
    parser.add_argument("--metrics", required=True, help="e.g. reports/source/hopper-medium-v2.json")
    parser.add_argument("--minari-dir", required=True, help="the Minari export, e.g. data/hopper-medium-v2/minari")
    args = parser.parse_args(argv)
    with outputs_together(args.output, f"{args.output}.sha256", args.policy, args.metrics, args.minari_dir):
        make(args)


def make(args) -> None:
    """The dataset of `args.dataset`, got as its source says, with its Minari export."""
    source = lookup(args.dataset).source
    data = DownloadParams.from_params(args.params, args.dataset)
    if source == "download":
        result = download_to_files(data, *paths(args))
        checked = "checked" if result["sha256_checked"] else "NOT checked (data.check_sha256: false)"
        print(f"download: {result['url']} -> {args.output} (sha256 {result['sha256']}, {checked})")
    elif source == "minari":
        result = minari_to_files(data, *paths(args))
        print(
            f"minari: {args.dataset} ({result['env_id']}; {result['rows']:,} rows, {result['dataset_episodes']:,} "
            f"episodes; reference scores: {result['ref_scores_source']}) -> {args.output}"
        )
    else:
        result = collect_to_files(CollectParams.from_params(args.params, args.dataset), *paths(args))
        policies = "; ".join(
            f"{name} policy score {result[f'{name}_normalized_mean']:.1f} after {result[f'{name}_env_steps']:,} "
            f"env steps"
            for name in [key.removesuffix("_env_steps") for key in result if key.endswith("_env_steps")]
        )
        print(
            f"collect {args.dataset}: {policies or 'random actions'}; {result['rows']:,} rows, "
            f"{result['dataset_episodes']:,} episodes -> {args.output} (sha256 {result['sha256']})"
        )
    env = result.get("env_id") or env_id(args.dataset, data.env_version)
    exported = export_file(args.output, args.dataset, env, args.minari_dir)
    print(
        f"minari export: {exported} (with MINARI_DATASETS_PATH={args.minari_dir}, "
        f"minari.load_dataset('{minari_id(args.dataset)}') opens it)"
    )


def paths(args) -> tuple[str, str, str]:
    return args.output, args.policy, args.metrics


if __name__ == "__main__":
    run_stage(main)
