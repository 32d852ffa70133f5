"""``python -m stn_jax.cli ARGS`` that also records which files this process writes.

Usage: ``python tests/_audited_cli.py RECORD ARGS...`` runs the ``stn-jax`` command exactly as
``python -m stn_jax.cli ARGS...`` would (``runpy``, ``sys.argv`` set the same way) and, when
the process exits normally (``sys.exit`` included), writes to the JSON file RECORD the
sorted absolute paths it opened for writing, created, renamed, truncated or removed, as seen
by Python's audit hooks (``sys.addaudithook``). Writes made in C++ (orbax's tensorstore
array files) are not seen; config.json, metrics.jsonl, results.json and figures are.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir": 1, "os.remove": 1, "os.rmdir": 1, "os.truncate": 1, "os.rename": 2,
                "shutil.rmtree": 1, "shutil.move": 2}
"""Audit event -> how many leading arguments are paths the event changes."""


def _absolute(path: object) -> str | None:
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.path.abspath(os.fsdecode(path))
    return None   # a file descriptor


def main() -> None:
    record, sys.argv[1:] = sys.argv[1], sys.argv[2:]
    written: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[2], int) and args[2] & _WRITE_FLAGS:
            paths = [args[0]]
        else:
            paths = list(args[:_PATH_EVENTS.get(event, 0)])
        written.update(p for p in map(_absolute, paths) if p is not None)

    def dump() -> None:
        text = json.dumps(sorted(written))   # serialised before the record itself is opened
        with open(record, "w") as f:
            f.write(text)

    sys.addaudithook(hook)
    atexit.register(dump)
    runpy.run_module("stn_jax.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
