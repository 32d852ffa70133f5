"""Preview figures of every distorted dataset: docs/images/data_preview_<name>.png.

The first 16 images of each dataset's fixed test set (TEST_SEED), made with the ``stn-jax data``
command. Uses MNIST from --data-dir (IDX) or the auto source.

Usage:
  python -m experiments.figures.data_previews --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse

from stn_jax.cli import main as cli_main
from stn_jax.data import DATASETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    args = parser.parse_args()
    source = ["--data-dir", args.data_dir, "--mnist-source", "idx"] if args.data_dir else []
    for name in args.datasets:
        cli_main(["data", "--dataset", name, "--num", "16", "--cols", "8",
                  "--preview", f"{args.out}/data_preview_{name}.png", *source])


if __name__ == "__main__":
    main()
