"""The README's functional-API example runs as written (it is the first thing users copy)."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text[text.index(f"<!-- section:{section} -->"):text.index(f"<!-- /section:{section} -->")]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_core_api_example_runs():
    blocks = _python_blocks("core-api")
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md:core-api", "exec"), namespace)  # noqa: S102
    assert namespace["same"].shape == (8, 28, 28, 1)
    assert namespace["zoom"].shape == (8, 14, 14, 1)
    assert namespace["vol_out"].shape == (2, 8, 16, 16, 1)
