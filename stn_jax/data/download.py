"""Download the four MNIST IDX files from the public mirrors, verifying their content.

Like torchvision's ``MNIST(download=True)``: each file is tried on every mirror in turn; a file
is accepted only if it decompresses and the md5 of its *uncompressed* content matches the known
value (the gzip bytes differ between recompressions, the content does not). A file is written
to a temporary name and renamed into place once verified, so an interrupted or corrupt
download never leaves a file that looks valid. Files already in the cache are verified and kept.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from stn_jax.data import idx

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
"""Base URLs serving ``<name>.gz`` for the four standard MNIST files, tried in order."""


class DownloadError(RuntimeError):
    """No mirror delivered a verified copy of a file (the message lists every attempt)."""


def _verified(path: Path, base: str, md5s: Mapping[str, str]) -> str | None:
    """None if ``path`` holds the verified content of ``base``, else the reason it does not."""
    try:
        data = idx.read_bytes(path)
    except idx.IDXError as err:
        return str(err)
    md5 = hashlib.md5(data).hexdigest()
    if md5 != md5s[base]:
        return f"md5 of the uncompressed content is {md5}, expected {md5s[base]}"
    return None


def is_complete(cache_dir: str | os.PathLike, *, md5s: Mapping[str, str] | None = None) -> bool:
    """Whether ``cache_dir`` already holds all four verified files (no network access)."""
    cache_dir = Path(cache_dir)
    md5s = idx.MNIST_CONTENT_MD5 if md5s is None else md5s
    return all((cache_dir / (b + ".gz")).is_file() and _verified(cache_dir / (b + ".gz"), b, md5s) is None
               for b in idx.MNIST_FILES.values())


def download_mnist(cache_dir: str | os.PathLike, *, mirrors: Sequence[str] | None = None,
                   timeout: float = 60.0, md5s: Mapping[str, str] | None = None) -> Path:
    """Make sure ``cache_dir`` holds the four verified MNIST ``.gz`` files; return ``cache_dir``.

    Args:
      cache_dir: directory to fill (created if needed).
      mirrors: base URLs tried in order for each file (default :data:`MIRRORS`).
      timeout: seconds per HTTP request.
      md5s: expected md5 of each file's uncompressed content, by standard base name
        (default :data:`stn_jax.data.idx.MNIST_CONTENT_MD5`).

    Raises:
      DownloadError: a file could not be fetched and verified from any mirror; the message
        names the file and what each mirror returned (HTTP error, truncated, wrong md5...).
    """
    mirrors = MIRRORS if mirrors is None else tuple(mirrors)
    md5s = idx.MNIST_CONTENT_MD5 if md5s is None else md5s
    if not mirrors:
        raise ValueError("mirrors must name at least one base URL")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for base in idx.MNIST_FILES.values():
        target = cache_dir / (base + ".gz")
        if target.is_file() and _verified(target, base, md5s) is None:
            continue
        attempts = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + base + ".gz"
            tmp = target.with_name(target.name + ".part")
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) mirrors)
                    tmp.write_bytes(response.read())
            except (urllib.error.URLError, OSError, ValueError) as err:
                attempts.append(f"{url}: {err}")
                tmp.unlink(missing_ok=True)
                continue
            problem = _verified(tmp, base, md5s)
            if problem is None:
                if tmp.read_bytes()[:2] != b"\x1f\x8b":  # served uncompressed: store as .gz
                    tmp.write_bytes(gzip.compress(tmp.read_bytes(), mtime=0))
                os.replace(tmp, target)
                break
            attempts.append(f"{url}: {problem}")
            tmp.unlink(missing_ok=True)
        else:
            raise DownloadError(f"could not download a verified {base}.gz into {cache_dir}:\n  "
                                + "\n  ".join(attempts))
    return cache_dir
