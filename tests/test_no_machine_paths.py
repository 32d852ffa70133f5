"""No tracked text file contains an absolute path of the machine it was made on.

Committed files (code, docs, result JSON, training logs) must name paths relative to the
repository, e.g. ``experiments/results/...`` or ``../shared/data/mnist``: an absolute path under
the filesystem root's ``work``, ``root``, ``home`` or ``tmp`` directories works only on the
machine that wrote it. There is no exception list: examples use placeholders such as
``/path/to/mnist`` or relative paths.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_DIRS = ("work", "root", "home", "tmp")
# "/<dir>" at the start of a path (not inside a relative path or a URL), as a whole name
PATTERN = re.compile(r"(?<![\w./~-])/(?:" + "|".join(_DIRS) + r")(?![\w.-])")


def _tracked_text_files() -> list[pathlib.Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue                                   # binary (PNG, ...)
        files.append(path)
    return files


def test_pattern():
    for bad in ("/" + "work/x", "a /" + "tmp", '"/' + 'home/u/f"', "--workdir /" + "root/run"):
        assert PATTERN.search(bad), bad
    for good in ("experiments/results/runs/x", "../shared/data/mnist", "https://example.com/" + "home/x",
                 "runs/" + "tmp/x", "/path/to/idx", "/" + "tmpfs", "~/" + "work/x"):
        assert not PATTERN.search(good), good


def test_no_absolute_machine_paths_in_tracked_files():
    hits = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if PATTERN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:160]}")
    assert not hits, "absolute machine paths in tracked files:\n" + "\n".join(hits[:50])
