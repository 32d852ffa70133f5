"""Download the four MNIST IDX files from the public mirrors, verifying their content.

Like torchvision's ``MNIST(download=True)``: each file is tried on every mirror in turn; a file
is accepted only if it decompresses and the md5 of its *uncompressed* content matches the known
value (the gzip bytes differ between recompressions, the content does not). A file is written
to a temporary name and renamed into place once verified, so an interrupted or corrupt
download never leaves a file that looks valid. Files already in the cache are verified and kept.

The mirrors are :data:`MIRRORS` unless ``$STN_JAX_MNIST_MIRRORS`` lists others (base URLs
separated by spaces or commas; set but empty: no mirror, so nothing is downloaded). Each
request gives up after ``connect_timeout`` seconds without a connection and ``timeout``
seconds without data.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from stn_jax.data import idx

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
"""Base URLs serving ``<name>.gz`` for the four standard MNIST files, tried in order."""


ENV_MIRRORS = "STN_JAX_MNIST_MIRRORS"
"""Environment variable overriding :data:`MIRRORS` (space- or comma-separated base URLs)."""
CONNECT_TIMEOUT = 5.0
"""Default seconds to wait for a mirror to accept the connection."""


class DownloadError(RuntimeError):
    """No mirror delivered a verified copy of a file (the one-line message lists every attempt).

    Attributes:
      attempts: ``(url, problem)`` of every failed attempt, in order.
    """

    def __init__(self, message: str, *, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)

    def summary(self) -> str:
        """One line: the problem of each mirror (host and reason), or the message's first line."""
        if not self.attempts:
            return str(self).splitlines()[0]
        parts = [f"{urllib.parse.urlsplit(url).netloc or url}: {problem}" for url, problem in self.attempts]
        return "; ".join(parts)


def default_mirrors() -> tuple[str, ...]:
    """``$STN_JAX_MNIST_MIRRORS`` if set (possibly empty), else :data:`MIRRORS`."""
    env = os.environ.get(ENV_MIRRORS)
    if env is None:
        return MIRRORS
    return tuple(url for url in env.replace(",", " ").split() if url)


def _connection(base: type, connect_timeout: float, read_timeout: float) -> type:
    """``base`` (an ``http.client`` connection class) that connects within ``connect_timeout``
    seconds, then waits up to ``read_timeout`` seconds for each read."""

    class Connection(base):
        def connect(self) -> None:
            self.timeout = connect_timeout
            super().connect()
            self.sock.settimeout(read_timeout)

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self._cls = _connection(http.client.HTTPConnection, connect_timeout, read_timeout)

    def http_open(self, req):  # noqa: ANN001, ANN201 (urllib handler API)
        return self.do_open(self._cls, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self._cls = _connection(http.client.HTTPSConnection, connect_timeout, read_timeout)

    def https_open(self, req):  # noqa: ANN001, ANN201 (urllib handler API)
        return self.do_open(self._cls, req, context=self._context)


def _fetch(url: str, *, connect_timeout: float, timeout: float) -> bytes:
    opener = urllib.request.build_opener(_HTTPHandler(connect_timeout, timeout),
                                         _HTTPSHandler(connect_timeout, timeout))
    with opener.open(url) as response:
        return response.read()


def _reason(err: Exception) -> str:
    """A short description of a failed request (``URLError`` carries the socket error)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP Error {err.code}: {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


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
                   timeout: float = 60.0, connect_timeout: float = CONNECT_TIMEOUT,
                   md5s: Mapping[str, str] | None = None) -> Path:
    """Make sure ``cache_dir`` holds the four verified MNIST ``.gz`` files; return ``cache_dir``.

    Args:
      cache_dir: directory to fill (created if needed).
      mirrors: base URLs tried in order for each file (default :func:`default_mirrors`).
      timeout: seconds to wait for each read of a response.
      connect_timeout: seconds to wait for a mirror to accept the connection.
      md5s: expected md5 of each file's uncompressed content, by standard base name
        (default :data:`stn_jax.data.idx.MNIST_CONTENT_MD5`).

    Raises:
      DownloadError: a file could not be fetched and verified from any mirror; the message
        names the file and what each mirror returned (HTTP error, truncated, wrong md5...).
    """
    mirrors = default_mirrors() if mirrors is None else tuple(mirrors)
    md5s = idx.MNIST_CONTENT_MD5 if md5s is None else md5s
    if not mirrors:
        raise ValueError(f"mirrors must name at least one base URL (${ENV_MIRRORS} is set but empty)")
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
                body = _fetch(url, connect_timeout=connect_timeout, timeout=timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                attempts.append((url, _reason(err)))
                continue
            tmp.write_bytes(body)
            problem = _verified(tmp, base, md5s)
            if problem is None:
                if tmp.read_bytes()[:2] != b"\x1f\x8b":  # served uncompressed: store as .gz
                    tmp.write_bytes(gzip.compress(tmp.read_bytes(), mtime=0))
                os.replace(tmp, target)
                break
            attempts.append((url, problem))
            tmp.unlink(missing_ok=True)
        else:
            raise DownloadError(f"could not download a verified {base}.gz into {cache_dir}: "
                                + "; ".join(f"{url}: {problem}" for url, problem in attempts),
                                attempts=attempts)
    return cache_dir
