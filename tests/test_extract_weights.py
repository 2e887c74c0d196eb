"""heatvol.extract.weights: where model files are found, and the download code (run against
an HTTP server on 127.0.0.1; no test touches the network)."""

from __future__ import annotations

import hashlib
import io
import socket
import zipfile
from pathlib import Path

import pytest

from conftest import FileServer

from heatvol.extract import weights
from heatvol.extract.weights import MODELS, ModelFile, ModelFileMissing, locate

PAYLOAD = b"not really an onnx model\n" * 1000


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private cache and no HEATVOL_MODELS."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HEATVOL_MODELS", raising=False)
    return tmp_path


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving a dict path -> bytes; counts requests."""
    srv = FileServer()
    yield srv.url, srv.files, srv.hits
    srv.close()


def _entry(url, sha=hashlib.sha256(PAYLOAD).hexdigest(), fmt="onnx", filename="m.onnx"):
    return ModelFile(name="m", filename=filename, sha256=sha, format=fmt, url=url,
                     upstream="test", licence="test")


def _closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, like no network
    return f"http://127.0.0.1:{port}/m.onnx"


def test_table_is_consistent():
    for name, m in MODELS.items():
        assert m.name == name and m.filename and m.licence and m.upstream
        assert m.sha256 is None or len(m.sha256) == 64
        assert m.url is not None or "local file only" in m.upstream


def test_table_checksums_match_shared_models():
    models = Path(__file__).resolve().parents[2] / "shared" / "models"
    if not models.is_dir():
        pytest.skip(f"{models} not found")
    for m in MODELS.values():
        p = models / m.filename
        if p.is_file():
            assert weights.sha256_of(p) == m.sha256, m.filename


def test_search_order_models_dir_env_cache(env, monkeypatch):
    a, b = env / "a", env / "b"
    a.mkdir()
    b.mkdir()
    entry = _entry(None, sha=None)
    cache = weights.cache_dir()
    cache.mkdir(parents=True)
    (cache / "m.onnx").write_bytes(b"c")
    assert locate(entry) == cache / "m.onnx"
    (b / "m.onnx").write_bytes(b"b")
    monkeypatch.setenv("HEATVOL_MODELS", str(b))
    assert locate(entry) == b / "m.onnx"
    (a / "m.onnx").write_bytes(b"a")
    assert locate(entry, a) == a / "m.onnx"  # --models wins over the environment
    assert locate(entry, env / "b") == b / "m.onnx"


def test_missing_models_dir_is_an_error(env, monkeypatch):
    with pytest.raises(ModelFileMissing, match="no such models folder.*--models"):
        locate("nanodet", env / "nope")
    monkeypatch.setenv("HEATVOL_MODELS", str(env / "nope2"))
    with pytest.raises(ModelFileMissing, match="HEATVOL_MODELS"):
        locate("nanodet")


def test_local_only_file_missing_says_where(env):
    with pytest.raises(ModelFileMissing) as ei:
        locate("movenet-thunder", download=True)
    msg = str(ei.value)
    assert "\n" not in msg and "movenet-thunder.onnx" in msg and str(weights.cache_dir()) in msg
    with pytest.raises(ModelFileMissing, match="unknown model"):
        locate("no-such-model")


def test_download_ok_then_no_network(env, server):
    base, files, hits = server
    files["/m.onnx"] = PAYLOAD
    lines = []
    p = locate(_entry(base + "/m.onnx"), progress=lambda line, end=False: lines.append(line))
    assert p == weights.cache_dir() / "m.onnx" and p.read_bytes() == PAYLOAD
    assert lines and "downloaded m.onnx" in lines[-1]
    assert [f.name for f in p.parent.iterdir()] == ["m.onnx"]  # no temporary left
    # Present: the network is not touched (the server would 404 now).
    files.clear()
    n = len(hits)
    assert locate(_entry(base + "/m.onnx"), progress=None) == p
    assert len(hits) == n


def test_download_bad_checksum(env, server):
    base, files, _ = server
    files["/m.onnx"] = PAYLOAD + b"x"
    with pytest.raises(ModelFileMissing, match="sha256") as ei:
        locate(_entry(base + "/m.onnx"), progress=None)
    assert "\n" not in str(ei.value)
    cache = weights.cache_dir()
    assert not any(cache.iterdir())  # nothing kept, no temporary left


def test_download_404(env, server):
    base, _, _ = server
    with pytest.raises(ModelFileMissing, match="HTTP 404.*put m.onnx in"):
        locate(_entry(base + "/m.onnx"), progress=None)
    assert not any(weights.cache_dir().iterdir())


def test_download_no_network(env):
    with pytest.raises(ModelFileMissing, match="cannot download m.onnx.*put m.onnx in") as ei:
        locate(_entry(_closed_port_url()), progress=None, timeout=5)
    assert "\n" not in str(ei.value)


def test_download_off(env, server):
    base, files, hits = server
    files["/m.onnx"] = PAYLOAD
    with pytest.raises(ModelFileMissing, match="downloads are off"):
        locate(_entry(base + "/m.onnx"), download=False)
    assert hits == []


def test_download_zip_member(env, server):
    base, files, _ = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("export/end2end.onnx", PAYLOAD)
        zf.writestr("export/pipeline.json", b"{}")
    files["/m.zip"] = buf.getvalue()
    entry = _entry(base + "/m.zip", sha=hashlib.sha256(buf.getvalue()).hexdigest(),
                   fmt="zip:export/end2end.onnx", filename="m-end2end.onnx")
    p = locate(entry, progress=None)
    assert p.name == "m-end2end.onnx" and p.read_bytes() == PAYLOAD
    assert [f.name for f in p.parent.iterdir()] == ["m-end2end.onnx"]
    bad = _entry(base + "/m.zip", sha=entry.sha256, fmt="zip:nope.onnx", filename="x.onnx")
    with pytest.raises(ModelFileMissing, match="no member"):
        locate(bad, progress=None)


def test_model_file_validation():
    with pytest.raises(ValueError, match="format"):
        ModelFile("x", "x.bin", None, "tflite", None, "u", "l")


def test_download_without_a_published_checksum_prints_its_digest(env, server):
    """A release with no published checksum (OpenMMLab's zips): the first download is trusted
    and its sha256 printed for the user to compare; nothing else changes."""
    base, files, _ = server
    files["/m.onnx"] = PAYLOAD
    lines = []
    p = locate(_entry(base + "/m.onnx", sha=None),
               progress=lambda line, end=False: lines.append(line))
    assert p.read_bytes() == PAYLOAD
    assert hashlib.sha256(PAYLOAD).hexdigest() in lines[-1]
    assert "no published checksum" in lines[-1]
