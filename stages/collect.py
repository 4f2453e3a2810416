"""source stage, data.source: collect -- make a D4RL-style dataset offline.

Trains a linear behaviour policy with ARS on the CPU until its D4RL-normalised score
lies in [collect.band_low, collect.band_high], then rolls it out with Gaussian action
noise for collect.steps transitions.

Reads  params.yaml collect.*
Writes --output (D4RL layout; collect.layout v0 leaves out timeouts and infos) and
       <output>.sha256, --policy (the behaviour policy, JSON), --metrics (JSON)
"""

import argparse

from dtrepro.collect.dataset import CollectParams, collect_to_files
from dtrepro.errors import run_stage
from dtrepro.params import add_params_argument


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    parser.add_argument("--output", required=True, help="the dataset, e.g. data/raw.hdf5")
    parser.add_argument("--policy", required=True, help="the behaviour policy, e.g. models/behaviour.json")
    parser.add_argument("--metrics", required=True, help="e.g. reports/source.json")
    args = parser.parse_args(argv)
    params = CollectParams.from_params(args.params)
    result = collect_to_files(params, args.output, args.policy, args.metrics)
    print(
        f"collect: behaviour policy score {result['behaviour_normalized_mean']:.1f} after "
        f"{result['behaviour_env_steps']:,} env steps; {result['rows']:,} rows at "
        f"{result['rollout_steps_per_s']:,.0f} steps/s -> {args.output} (sha256 {result['sha256']})"
    )


if __name__ == "__main__":
    run_stage(main)
