"""study stage: check params.yaml's study lists before DVC runs any command built from them.

dvc.yaml's stages are matrices over study.datasets, study.context_lens and study.seeds, whose
items DVC writes into their shell commands. Every other stage comes after this one, so a list
item that is not a known dataset name or an integer (e.g. "5; rm -rf ~") stops `dvc repro`
here, before any such command runs. It also refuses a section no stage reads (a typo such as
`trian:`) and data.url or data.sha256 (one file's) without exactly one D4RL dataset to download.
Reads  params.yaml, all of it
Writes --stamp (a fixed text: the check passed; its content never changes, so passing it
       again re-runs nothing downstream)
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse

from dtrepro.params import StudyParams, add_params_argument, check_params, load_yaml
from dtrepro.runtime.atomic import atomic_output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    parser.add_argument("--stamp", required=True, help="file written when the check passes")
    args = parser.parse_args(argv)
    study = StudyParams.from_params(args.params)
    check_params(study, load_yaml(args.params))
    with atomic_output(args.stamp) as tmp:
        tmp.write_text("study.datasets are known names; study.context_lens and study.seeds are lists of integers\n")
    print(
        f"study: {len(study.datasets) * len(study.runs)} runs, datasets {study.datasets} x K in {study.context_lens} "
        f"x seeds {study.seeds}"
    )


if __name__ == "__main__":
    run_stage(main)
