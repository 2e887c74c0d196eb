"""Smoke test of benchmarks/gcn_throughput.py: tiniest settings on the CPU, one model per call."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gcn_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gcn_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()       # main() calls torch.set_num_threads
    yield
    torch.set_num_threads(threads)


def _table_rows(text: str) -> dict:
    """model -> cells of its table row."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "model":
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("name", ["stgcn", "msg3d", "dualhead"])
def test_gcn_throughput_smoke(bench, name, tmp_path, capsys, keep_threads):
    out = tmp_path / "rows.json"
    assert bench.main(["--models", name, "--devices", "cpu", "--batch-size", "2", "--frames", "8",
                       "--warmup", "1", "--steps", "1", "--threads", "1",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0]
    assert header.startswith("# ") and "cores" in header and torch.__version__ in header
    assert "| model | params | device | setting (layout, T, M) | batch | ms/step (median) " \
           "| samples/s |" in text
    rows = _table_rows(text)
    assert list(rows) == [name]
    _, params, device, setting, batch, ms, sps = rows[name]
    assert device == "cpu" and setting == "kinect20, T=8, M=1" and batch == "2"
    assert int(params.replace(",", "")) > 0 and float(ms) > 0 and float(sps) > 0

    saved = json.loads(out.read_text())["rows"]
    assert len(saved) == 1 and saved[0]["model"] == name and saved[0]["samples_per_s"] > 0
    assert saved[0]["T"] == 8 and saved[0]["M"] == 1 and saved[0]["num_classes"] == 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gcn_throughput_cuda_without_gpu(bench, capsys):
    assert bench.main(["--devices", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cuda" in err
