"""benchmarks/gpu_acceptance.py: the dry run (every part end to end on the CPU: CUDA simulator,
tiny settings, a subset of the shared data) writes the JSON and the table; a step is stopped at
its budget; without a GPU the real run refuses in one line.

The dry run is what keeps the GPU acceptance run from rotting between the rare moments a GPU is
lent: it runs the same command lines, the same report code, on every test run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    penn, ucla = shared_data("penn_action"), shared_data("nw_ucla")
    assert penn.parent == ucla.parent
    out = tmp_path_factory.mktemp("acceptance")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(penn.parent), "--out",
                           str(out), "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "acceptance.json").read_text())
    return {"out": out, "stdout": proc.stdout, "report": report, "wall": wall,
            "markdown": (out / "acceptance.md").read_text()}


def test_dry_run_runs_every_step(dry_run):
    report = dry_run["report"]
    assert report["dry_run"] is True and set(report["parts"]) == {"speed", "accuracy"}
    steps = {part: p["part"]["steps"] for part, p in report["parts"].items()}
    assert list(steps["speed"]) == ["correctness", "render_cli", "render_gpu",
                                    "train_throughput_cpu", "train_throughput_gpu"]
    assert list(steps["accuracy"]) == ["import", "train", "test", "ensemble"]
    for part, part_steps in steps.items():
        for step, info in part_steps.items():
            assert info["wall_s"] <= info["budget_s"] + 1, (part, step, info)
            for job, res in info["jobs"].items():
                expected = "failed (exit 1)" if job == "cuda_without_gpu" else "ok"
                assert res["status"] == expected, (part, step, job, res)
    accuracy = report["parts"]["accuracy"]
    assert set(accuracy["train"]) == {"penn_joint", "penn_limb", "ucla_joint", "ucla_bone",
                                      "ucla_joint_motion", "ucla_bone_motion"}
    for name, run in accuracy["train"].items():
        assert run["steps"] == 2 and run["stopped"] == "max_steps", (name, run)


def test_dry_run_figures(dry_run):
    speed = dry_run["report"]["parts"]["speed"]
    c = speed["correctness"]
    assert c["samples"] == c["samples_planned"] > 0 and c["modes"] == ["joint", "limb"]
    assert c["float32_max_abs"] == 0 and c["float16_max_abs"] == 0 and c["uint8_max_abs"] == 0
    assert c["float32_bit_identical_batches"] == c["batches"]
    assert c["interop"]["numba"]["ok"] is True
    assert c["interop"]["cupy"].startswith("not run") and c["interop"]["torch"].startswith(
        "not run")
    assert speed["render_cli"]["same_file"] is True
    nogpu = speed["render_cli"]["cuda_without_gpu"]
    assert nogpu["message_lines"] == 1 and "no usable CUDA GPU" in nogpu["message"]
    rows = speed["render_gpu"]["rows"]
    assert {r["mode"] for r in rows} == {"joint", "limb"}
    assert speed["render_gpu"]["device"]["simulator"] is True
    for r in rows:
        assert r["gpu_samples_per_s"] > 0 and r["cpu_samples_per_s"] > 0 and r["fill_s"] > 0
    tp = speed["train_throughput"]
    assert tp["cpu"]["samples_per_s"] > 0 and 0 <= tp["cpu"]["data_wait_fraction"] <= 1
    assert "no GPU" in tp["gpu"]["skipped"]
    assert speed["pytest_test_cuda"]["status"] == "ok" or \
        speed["pytest_test_cuda"]["status"].startswith("not run: pytest is not installed")

    accuracy = dry_run["report"]["parts"]["accuracy"]
    for name, res in accuracy["test"].items():
        assert 0 <= res["top1"] <= 1 and res["num_samples"] > 0, (name, res)
        assert res["num_clips"] == 2 and res["flip"] == name.startswith("penn")
    assert set(accuracy["ensemble"]) == {"penn_joint_limb", "ucla_4stream"}
    assert accuracy["ensemble"]["ucla_4stream"]["weights"] == [2, 2, 1, 1]
    for res in accuracy["ensemble"].values():
        assert 0 <= res["top1"] <= 1


def test_dry_run_report_and_table(dry_run):
    report, md = dry_run["report"], dry_run["markdown"]
    names = [c["check"] for c in report["checks"]]
    for needle in ("CUDA = CPU kernels, float32", "tests/test_cuda.py", "interop: cupy",
                   "interop: torch", "`heatvol render --render-device cuda` file = CPU file",
                   "write floor", "all CPU cores", "data wait", "Penn Action SlowOnly joint",
                   "joint + limb fusion", "NW-UCLA DualHead-Net joint", "4-stream"):
        assert any(needle in n for n in names), needle
    # every check has a row in the table, and the tables are well formed
    assert "Dry run" in md
    for c in report["checks"]:
        assert f"| {c['check']} |" in md
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            assert all(ln.count("|") == rows[0].count("|") for ln in rows), block
    assert report["machine"]["cpu_count"] >= 1 and "pytest" in report["machine"]
    # what comes back from a lent machine: the JSON, the table and one archive of the logs
    with tarfile.open(dry_run["out"] / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/accuracy.train.penn_joint.out" in names
    assert "work/results/ucla_4stream.json" in names and "work/runs/ucla_bone/log.csv" in names
    # the one-screen summary: a line per check and part, no more than a screen
    summary = dry_run["stdout"][dry_run["stdout"].index("GPU acceptance"):].splitlines()
    assert len(summary) <= 40 and sum("[PASS]" in ln or "[FAIL]" in ln or "[ -- ]" in ln
                                      for ln in summary) == len(report["checks"])


def test_a_step_is_stopped_at_its_budget_with_what_it_has(tmp_path, monkeypatch):
    """SIGTERM at the step's deadline (a trainer then checkpoints and exits); SIGKILL after
    the grace period for a process that ignores it; both reported as stopped at budget."""
    mod = _module()
    monkeypatch.setattr(mod, "GRACE_S", 2)
    monkeypatch.setitem(mod.STEP_BUDGETS, "speed", {"one": 6, "two": 100})
    part = mod.Part("speed", budget_s=mod.DEFAULT_BUDGET_S, logs=tmp_path)
    polite = ("import signal, sys, time\n"
              "def stop(*_):\n    print('checkpoint written', flush=True); sys.exit(130)\n"
              "signal.signal(signal.SIGTERM, stop)\nprint('started', flush=True)\n"
              "time.sleep(60)\n")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('started', flush=True)\ntime.sleep(60)\n")
    quick = "print('done')"
    start = time.monotonic()
    res = part.run("one", [mod.Job("polite", [sys.executable, "-c", polite]),
                           mod.Job("stubborn", [sys.executable, "-c", stubborn]),
                           mod.Job("quick", [sys.executable, "-c", quick])])
    wall = time.monotonic() - start
    assert 6 <= wall < 6 + 2 + 4
    assert res["polite"]["status"] == "stopped at budget" and res["polite"]["rc"] == 130
    assert "checkpoint written" in res["polite"]["stdout"]
    assert res["stubborn"]["status"] == "stopped at budget" and res["stubborn"]["rc"] == -9
    assert res["quick"]["status"] == "ok" and res["quick"]["stdout"].strip() == "done"
    jobs = part.steps["one"]["jobs"]
    assert jobs["polite"]["status"] == "stopped at budget" and jobs["quick"]["wall_s"] < 6


def test_later_steps_keep_their_budget(tmp_path, monkeypatch):
    """A step never eats into the planned budgets of the steps after it."""
    mod = _module()
    monkeypatch.setitem(mod.STEP_BUDGETS, "speed", {"a": 400, "b": 100, "c": 50})
    part = mod.Part("speed", budget_s=mod.DEFAULT_BUDGET_S, logs=tmp_path,
                    start=time.monotonic() - 100)
    # 540 - 20 (grace) - 100 (spent) - 150 (b, c) = 270 left for a
    assert abs(part.step_budget("a") - 270) < 1
    assert part.step_budget("c") == 50
    half = mod.Part("speed", budget_s=mod.DEFAULT_BUDGET_S / 2, logs=tmp_path)
    assert half.plan == {"a": 200, "b": 50, "c": 25}


def test_penn_epochs_follow_the_measured_throughput():
    mod = _module()
    assert mod.penn_epochs_for(None, 320, 30) == (30, "default (no throughput measured in "
                                                      "this OUT)")
    # 0.6 x (320 - 30) s x 500 samples/s / (2 x 1258) = 34.6
    epochs, why = mod.penn_epochs_for(500.0, 320, 30)
    assert epochs == 34 and "500 samples/s" in why
    assert mod.penn_epochs_for(5000.0, 320, 30)[0] == 80    # clipped
    assert mod.penn_epochs_for(20.0, 320, 30)[0] == 8
    assert mod.penn_epochs_for(500.0, 160, 30)[0] == 15      # a smaller --budget trains less


def test_without_gpu_the_real_run_refuses_in_one_line(tmp_path):
    penn = shared_data("penn_action")
    probe = subprocess.run([sys.executable, str(SCRIPT), "--worker", "probe"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    machine = json.loads(probe.stdout.strip().splitlines()[-1])
    assert machine["heatvol"] and machine["cpu_count"] >= 1
    if machine.get("torch_cuda") or machine.get("numba_cuda_available"):
        pytest.skip("a CUDA GPU is present: the real run would start")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(penn.parent), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no usable CUDA GPU" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_data_folder_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--out",
                           str(tmp_path / "out"), "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"gpu_acceptance.py: {tmp_path / 'penn_action'}: no such folder (--data "
                     f"must hold penn_action/ and nw_ucla/, or the pose stores penn.h5 and "
                     f"ucla.h5)"]
