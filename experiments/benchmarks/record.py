"""The machine block and the writing of a benchmark's result JSON, shared by the benchmarks that
record the load average around their timed part."""

from __future__ import annotations

import json
import os
import platform
from typing import Any


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Platform, processor, CPU count, the load average before (``load_before``, from
    ``os.getloadavg()``) and after the timed part, and the local JAX devices."""
    import jax

    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "devices": [str(d) for d in jax.local_devices()]}


def write(path: str, record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON to ``path`` (creating its folder) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {path}")
