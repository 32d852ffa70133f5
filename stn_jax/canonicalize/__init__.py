"""Bulk canonicalisation: a trained spatial transformer as a data-pipeline stage.

>>> from stn_jax.canonicalize import Canonicalizer, canonicalize_batches
>>> canon = Canonicalizer.from_workdir("runs/rts")                       # doctest: +SKIP
>>> for batch in canonicalize_batches(canon, "digits/", batch_size=512):  # doctest: +SKIP
...     batch.source_ids, batch.images, batch.params, batch.predictions

``stn-jax canonicalize --workdir RUN --input SRC --output DST`` writes the same thing to atomic,
resumable Parquet parts (schema :data:`OUTPUT_SCHEMA`, rejects :data:`REJECT_SCHEMA`). On a Ray
cluster (the ``ray`` extra): :mod:`stn_jax.canonicalize.ray_engine` (``--engine ray``), not
imported here so that ``ray`` stays optional.
"""

from stn_jax.canonicalize.readers import FolderReader
from stn_jax.canonicalize.readers import NpzReader
from stn_jax.canonicalize.readers import ParquetReader
from stn_jax.canonicalize.readers import Reader
from stn_jax.canonicalize.readers import RejectError
from stn_jax.canonicalize.readers import decode_image
from stn_jax.canonicalize.readers import open_reader
from stn_jax.canonicalize.runner import CanonicalBatch
from stn_jax.canonicalize.runner import Canonicalizer
from stn_jax.canonicalize.runner import Reject
from stn_jax.canonicalize.runner import canonicalize_batches
from stn_jax.canonicalize.runner import run_canonicalize
from stn_jax.canonicalize.writer import OUTPUT_SCHEMA
from stn_jax.canonicalize.writer import REJECT_SCHEMA
from stn_jax.canonicalize.writer import PartWriter
from stn_jax.canonicalize.writer import decode_png
from stn_jax.canonicalize.writer import encode_png
from stn_jax.canonicalize.writer import read_output

__all__ = [
    "FolderReader",
    "NpzReader",
    "ParquetReader",
    "Reader",
    "RejectError",
    "decode_image",
    "open_reader",
    "CanonicalBatch",
    "Canonicalizer",
    "Reject",
    "canonicalize_batches",
    "run_canonicalize",
    "OUTPUT_SCHEMA",
    "REJECT_SCHEMA",
    "PartWriter",
    "decode_png",
    "encode_png",
    "read_output",
]
