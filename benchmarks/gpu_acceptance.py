"""GPU acceptance run: every GPU claim of heatvol checked and timed in one command (issue 16).

    python benchmarks/gpu_acceptance.py --data DATA --out OUT [--part speed|accuracy|all]
                                        [--budget SECONDS] [--dry-run]

DATA holds ``penn_action/`` (Penn Action .mat files) and ``nw_ucla/`` (NW-UCLA JSON), or the
pose stores ``penn.h5`` / ``ucla.h5`` imported from them. Results: ``OUT/acceptance.json``
(every figure), ``OUT/acceptance.md`` (tables ready to paste into docs/benchmarks.md),
``OUT/logs.tar.gz`` (``OUT/logs/``: each command's stdout/stderr, and the test results and
training logs from ``OUT/work/``, which also holds the stores and checkpoints). Running
``--part speed`` and then ``--part accuracy`` with the same OUT merges both into one JSON and
one table, and sizes the Penn Action epochs from the measured SlowOnly throughput. See
docs/gpu.md for running it on a GPU machine.

First a probe (seconds; counted in the first part's budget) records the versions, the GPU,
and whether every module a part needs is installed (pytest, CuPy: optional); without a usable
GPU, or with a module missing, a real run stops there with one line.

Parts and their budgets (seconds of wall time, for the default ``--budget 540`` = 9 minutes;
``--budget`` scales every step, and the accuracy part's training epochs, in proportion). A step
that reaches its budget is stopped (SIGTERM: `heatvol train` finishes its step and writes
last.pt; SIGKILL 20 s later) and the part goes on with what it has:

speed (correctness first, then timings; nothing else runs while something is timed)
 130  correctness (concurrently) import Penn Action; 1,000 random full-size samples, joint and
                  limb, float32 / float16 / uint8, CUDA vs CPU through ``heatvol.render_batch``
                  (tolerance 1e-6 / 1e-3 / 1, as tests/test_cuda.py; bit-identity counted);
                  CuPy and torch CUDA arrays in and out (zero-copy, ``out=`` filled in place);
                  pytest tests/test_cuda.py -k gpu_full_size (when pytest is installed)
  90  render_cli  ``heatvol render`` of Penn Action's test split (limb, 56², uint8) with
                  ``--render-device cpu`` and ``cuda``: the same file
 150  render_gpu  benchmarks/render_gpu.py: B = 1..256, joint/limb, 56²/64², GPU vs all CPU
                  cores, kernel time vs the write-bandwidth floor measured in the same run
                  (threads/block 64, 128, 256; the targets at 128, the shipped default)
  75  train_throughput_cpu, 75 train_throughput_gpu  benchmarks/train_throughput.py,
                  SlowOnly-R50 (preset slowonly-joint: batch 32, 48 x 56², bf16), 8 DataLoader
                  workers, 5 + 30 steps: ``--render cpu`` then ``--render gpu``
accuracy
  60  import      Penn Action and NW-UCLA pose stores (concurrently)
 320  train       six runs at once on the one GPU: SlowOnly-R50 joint and limb on Penn Action,
                  DualHead-Net joint / bone / joint-motion / bone-motion on NW-UCLA
 100  test        the six checkpoints (Penn: 10 clips + flip; NW-UCLA: 10 clips), concurrently
  20  ensemble    Penn joint + limb (1:1); NW-UCLA four streams (2:2:1:1)

``--dry-run`` runs every step end to end on the CPU with tiny settings: the CUDA kernels under
Numba's simulator (NUMBA_ENABLE_CUDASIM=1), a small subset of DATA (symlinks), two training
steps, tiny models. Its figures mean nothing; it proves that the commands still run and the
report is still written (tests/test_gpu_acceptance.py).

The script only talks to heatvol through its command line and its front doors
(``heatvol.render_batch``), and to the other benchmarks as subprocesses; every command line
is built in the ``Commands`` class below, the one place to update when a flag is renamed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DEFAULT_BUDGET_S = 540          # 9 minutes per part (the limit)
GRACE_S = 20                    # SIGTERM -> SIGKILL
EXIT_SKIPPED = 3                # heatvol: finished, but some inputs were skipped (import)
SCHEMA = 1

# ---------------------------------------------------------------------------- targets

TARGETS = {
    "equivalence_float32_max_abs": 1e-6,      # tests/test_cuda.py, docs/gpu.md
    "equivalence_float16_max_abs": 1e-3,
    "equivalence_uint8_max_abs": 1,
    "render_gpu_floor_ratio_max": 1.5,        # GPU time / write floor, at B >= 32
    "render_gpu_vs_cpu_min": 100.0,           # GPU samples/s / all CPU cores, at B >= 32
    "train_gpu_data_wait_max": 0.05,          # --render gpu: fraction of the step time
    "penn_slowonly_joint_top1": 0.96,
    "ucla_dualhead_joint_top1": 0.92,
    "ucla_dualhead_4stream_top1": 0.95,
}

# ---------------------------------------------------------------------------- schedules
# What each part runs. FULL: one H200 (sized to fit the budgets above); DRY: the 2-core CPU.

FULL = {
    "equivalence": {"batches": 40, "batch": 25, "frames": 48, "sizes": [56, 64]},  # 1,000 samples
    "render_cli": {"size": 56, "dtype": "uint8", "split": "test"},
    "render_gpu": ["--threads", "64", "128", "256"],
    "render_gpu_check_batch": 32,      # the floor / CPU-ratio targets hold from this batch up
    "render_gpu_check_threads": 128,   # for the kernel as shipped (its default block size)
    "throughput": {"preset": "slowonly-joint", "steps": 30, "warmup": 5},
    # Penn Action, PoseC3D SlowOnly-R50 (preset slowonly-joint / slowonly-limb: 48 frames, 56²
    # train, 64² test, bf16 autocast, channels-last): 1,258 training sequences, batch 32 ->
    # 39 steps per epoch. Epochs: sized from the speed part's measured SlowOnly samples/s when
    # it ran first in the same OUT (penn_epochs_for), else 30 = 1,170 steps = 37.7 k samples
    # per stream (fits at ~430 samples/s). lr 0.1 (the CPU preset's 0.05 per 16 samples;
    # pyskl uses 0.05 per 32 over 240 epochs, too slow for ~30), 1 warm-up epoch, cosine to 0.
    "penn": {"preset_joint": "slowonly-joint", "preset_limb": "slowonly-limb", "epochs": 30,
             "batch_size": 32, "lr": 0.1, "workers": 3, "render": "gpu", "device": "cuda",
             "sets": {"warmup_epochs": 1, "val_every": 0, "keep_epochs": 1},
             "test": {"num_clips": 10, "flip": True, "batch_size": 8, "workers": 3}},
    # NW-UCLA cross-view, DualHead-Net (preset ucla-dualhead-cpu's data settings: 32 frames,
    # aligned views, rotation 0.1, scaling 0.1): 1,020 training sequences, batch 32 -> 31 steps
    # per epoch; 60 epochs = 1,860 steps per stream (the CPU preset ran 16 epochs = 1,020 steps
    # at batch 16 for 86.4 %, still rising); lr 0.1, 5 warm-up epochs, bf16 autocast.
    "ucla": {"preset": "ucla-dualhead-cpu", "epochs": 60, "batch_size": 32, "lr": 0.1,
             "workers": 2, "device": "cuda",
             "sets": {"warmup_epochs": 5, "val_every": 0, "keep_epochs": 1, "amp": True},
             "test": {"num_clips": 10, "flip": False, "batch_size": 32, "workers": 2}},
}

DRY = {
    "subset": {"penn_every": 80, "ucla_every": 37},        # ~29 Penn, ~40 NW-UCLA files
    "equivalence": {"batches": 2, "batch": 1, "frames": 2, "sizes": [6, 8]},
    "render_cli": {"size": 16, "dtype": "uint8", "split": "test"},
    "render_gpu": ["--simulator"],
    "render_gpu_check_batch": 1,
    "render_gpu_check_threads": 8,
    "throughput": {"preset": "tiny", "steps": 2, "warmup": 1, "workers": 0},
    "penn": {"preset_joint": "slowonly-joint", "preset_limb": "slowonly-limb", "epochs": 1,
             "batch_size": 2, "lr": 0.1, "workers": 0, "render": "cpu", "device": "cpu",
             "max_steps": 2, "clip_len": 8, "size": 16,
             "sets": {"warmup_epochs": 0, "val_every": 0, "keep_epochs": 1, "test_size": 16,
                      "model_kwargs": {"base_channels": 8, "stage_blocks": [1, 1, 1]}},
             "test": {"num_clips": 2, "flip": True, "batch_size": 4, "workers": 0}},
    "ucla": {"preset": "ucla-dualhead-cpu", "epochs": 1, "batch_size": 2, "lr": 0.1,
             "workers": 0, "device": "cpu", "max_steps": 2, "clip_len": 8,
             "sets": {"warmup_epochs": 0, "val_every": 0, "keep_epochs": 1},
             "test": {"num_clips": 2, "flip": False, "batch_size": 8, "workers": 0}},
}

# Planned seconds per step at the default budget (scaled by --budget / 540).
STEP_BUDGETS = {
    "speed": {"correctness": 130, "render_cli": 90, "render_gpu": 150,
              "train_throughput_cpu": 75, "train_throughput_gpu": 75},
    "accuracy": {"import": 60, "train": 320, "test": 100, "ensemble": 20},
}
# Python modules each part needs on the machine (heatvol's runtime dependencies that its
# commands import; CuPy is optional: without it the CuPy interop check says "not installed").
NEEDS = {"speed": ["heatvol", "numpy", "numba", "torch", "h5py", "click", "yaml", "tqdm"],
         "accuracy": ["heatvol", "numpy", "numba", "torch", "h5py", "click", "yaml", "tqdm",
                      "matplotlib"]}   # matplotlib: `heatvol test` writes a confusion PNG
UCLA_STREAMS = ["joint", "bone", "joint-motion", "bone-motion"]
UCLA_WEIGHTS = [2, 2, 1, 1]     # pyskl's joint, bone, joint-motion, bone-motion fusion
PENN_TRAIN = 1258               # Penn Action's official training split
PENN_GPU_SHARE = 0.6            # of the training step's GPU time, for the two Penn streams
STARTUP_S = 30                  # a training process's start (CUDA, cuDNN, workers) and its end


# ---------------------------------------------------------------------------- commands


def _heatvol() -> list[str]:
    """The `heatvol` command, run by this Python: the same interpreter and import path as this
    script (a console script on PATH may belong to another install)."""
    return [sys.executable, "-m", "heatvol.cli"]


def _sets(sets: dict) -> list[str]:
    out = []
    for key, value in sets.items():
        out += ["--set", f"{key}={json.dumps(value)}"]   # JSON is YAML: --set parses it back
    return out


# This script's modes ("cpu": volumes rendered in the DataLoader workers, "gpu": inside the
# training step) as heatvol's --render-device values.
_RENDER_DEVICE = {"cpu": "cpu", "gpu": "cuda", "auto": "auto", "cuda": "cuda"}


class Commands:
    """Every command line this script runs (update here when a CLI flag is renamed)."""

    @staticmethod
    def import_store(fmt: str, src: Path, out: Path) -> list[str]:
        return _heatvol() + ["import", fmt, str(src), "--out", str(out), "--overwrite", "-q"]

    @staticmethod
    def render(poses: Path, out: Path, *, render_device: str, size: int, dtype: str,
               split: str, workers: int) -> list[str]:
        return _heatvol() + ["render", str(poses), "--out", str(out), "--limb", "--size",
                             str(size), "--dtype", dtype, "--split", split, "--render-device",
                             render_device, "--workers", str(workers), "--overwrite", "-q"]

    @staticmethod
    def train(poses: Path, work_dir: Path, *, preset: str, epochs: int, batch_size: int,
              lr: float, workers: int, device: str, sets: dict, render: str | None = None,
              limb: bool | None = None, modality: str | None = None,
              max_steps: int | None = None, clip_len: int | None = None,
              size: int | None = None) -> list[str]:
        cmd = _heatvol() + ["train", str(poses), "--preset", preset, "--work-dir", str(work_dir),
                            "--epochs", str(epochs), "--batch-size", str(batch_size),
                            "--lr", str(lr), "--workers", str(workers), "--device", device, "-q"]
        if render is not None:
            cmd += ["--render-device", _RENDER_DEVICE[render]]
        if limb is not None:
            cmd += ["--limb" if limb else "--joint"]
        if modality is not None:
            cmd += ["--modality", modality]
        if max_steps is not None:
            cmd += ["--max-steps", str(max_steps)]
        if clip_len is not None:
            cmd += ["--clip-len", str(clip_len)]
        if size is not None:
            cmd += ["--size", str(size)]
        return cmd + _sets(sets)

    @staticmethod
    def test(poses: Path, checkpoint: Path, out: Path, *, num_clips: int, flip: bool,
             batch_size: int, workers: int, device: str, render: str | None = None) -> list[str]:
        cmd = _heatvol() + ["test", str(poses), "--checkpoint", str(checkpoint), "--split",
                            "test", "--num-clips", str(num_clips), "--batch-size",
                            str(batch_size), "--workers", str(workers), "--device", device,
                            "--out", str(out), "-q"]
        if flip:
            cmd.append("--flip")
        if render is not None:
            cmd += ["--render-device", _RENDER_DEVICE[render]]
        return cmd

    @staticmethod
    def ensemble(results: list[Path], weights: list[float], out: Path) -> list[str]:
        return _heatvol() + ["ensemble", *map(str, results), "--weights",
                             *map(str, weights), "--json", "--out", str(out)]

    @staticmethod
    def render_gpu(extra: list[str]) -> list[str]:
        return [sys.executable, str(BENCH / "render_gpu.py"), "--json", *extra]

    @staticmethod
    def train_throughput(poses: Path, *, preset: str, render: str, steps: int, warmup: int,
                         workers: int) -> list[str]:
        return [sys.executable, str(BENCH / "train_throughput.py"), str(poses), "--preset",
                preset, "--render-device", _RENDER_DEVICE[render], "--steps", str(steps), "--warmup", str(warmup),
                "--workers", str(workers), "--json"]

    @staticmethod
    def pytest_cuda() -> list[str]:
        # the hardware test (skipped without a GPU); -s shows its "GPU vs CPU" line
        return [sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "no:cacheprovider",
                str(ROOT / "tests" / "test_cuda.py"), "-k", "gpu_full_size"]

    @staticmethod
    def worker(name: str, *args: str) -> list[str]:
        """This script's own check code, run in a fresh interpreter (see ``_worker_*``)."""
        return [sys.executable, str(Path(__file__).resolve()), "--worker", name, *args]


# ---------------------------------------------------------------------------- running steps


@dataclass
class Job:
    label: str
    argv: list[str]
    env: dict = field(default_factory=dict)
    skips_ok: bool = False   # exit 3 (finished, some inputs skipped) counts as done


class Part:
    """One part's clock: steps get their planned budget, never more than the part has left
    after reserving the planned budgets of the steps still to come."""

    def __init__(self, name: str, budget_s: float, logs: Path, start: float | None = None):
        self.name, self.budget_s, self.logs = name, budget_s, logs
        self.scale = budget_s / DEFAULT_BUDGET_S
        self.plan = {k: v * self.scale for k, v in STEP_BUDGETS[name].items()}
        self.start = time.monotonic() if start is None else start
        self.steps: dict[str, dict] = {}

    def step_budget(self, step: str) -> float:
        later = list(self.plan)[list(self.plan).index(step) + 1:]
        # a step stopped at its deadline may take GRACE_S more: keep that inside the part
        left = (self.budget_s - GRACE_S - (time.monotonic() - self.start)
                - sum(self.plan[s] for s in later))
        return max(5.0, min(self.plan[step], left))

    def run(self, step: str, jobs: list[Job], cwd: Path = ROOT) -> dict[str, dict]:
        """Run ``jobs`` concurrently within the step's budget; returns per-job results."""
        budget = self.step_budget(step)
        t0 = time.monotonic()
        deadline = t0 + budget
        procs = {}
        for job in jobs:
            out = self.logs / f"{self.name}.{step}.{job.label}.out"
            err = self.logs / f"{self.name}.{step}.{job.label}.err"
            env = _child_env(job.env)
            with open(out, "w") as fo, open(err, "w") as fe:
                proc = subprocess.Popen(job.argv, cwd=cwd, env=env, stdout=fo, stderr=fe,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            procs[job.label] = (proc, out, err, job)
        stopped, ended = set(), {}

        def running() -> bool:
            now = time.monotonic()
            for label, (proc, *_rest) in procs.items():
                if label not in ended and proc.poll() is not None:
                    ended[label] = now
            return len(ended) < len(procs)

        try:
            while running():
                if time.monotonic() >= deadline:
                    for label, (proc, *_rest) in procs.items():
                        if proc.poll() is None:
                            stopped.add(label)
                            _signal_group(proc, signal.SIGTERM)
                    kill_at = time.monotonic() + GRACE_S
                    while time.monotonic() < kill_at and running():
                        time.sleep(0.2)
                    break
                time.sleep(0.2)
        finally:  # also on Ctrl-C: the jobs run in their own sessions and would outlive us
            for proc, *_rest in procs.values():
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
        results = {}
        for label, (proc, out, err, job) in procs.items():
            rc = proc.wait()
            if label in stopped:
                status = "stopped at budget"
            elif rc == 0:
                status = "ok"
            elif rc == EXIT_SKIPPED and job.skips_ok:
                status = "ok"      # finished; the inputs it skipped are named in its log
            else:
                status = f"failed (exit {rc})"
            stdout = out.read_text(errors="replace")
            stderr = err.read_text(errors="replace")
            results[label] = {"status": status, "rc": rc, "stdout": stdout, "stderr": stderr,
                              "wall_s": round(ended.get(label, time.monotonic()) - t0, 1),
                              "log": str(out.relative_to(self.logs.parent)),
                              "command": " ".join(job.argv)}
        wall = time.monotonic() - t0
        self.steps[step] = {
            "budget_s": round(budget, 1), "wall_s": round(wall, 1),
            "jobs": {k: {"status": v["status"], "wall_s": v["wall_s"], "log": v["log"]} |
                     ({"tail": _tail(v["stdout"], v["stderr"])} if v["status"] != "ok" else {})
                     for k, v in results.items()}}
        print(f"  [{self.name}] {step}: {wall:.0f} s of {budget:.0f} s; "
              + ", ".join(f"{k} {v['status']}" for k, v in results.items()), flush=True)
        return results

    def summary(self) -> dict:
        return {"budget_s": round(self.budget_s, 1),
                "wall_s": round(time.monotonic() - self.start, 1), "steps": self.steps}


def _child_env(extra: dict | None = None) -> dict:
    """Every command imports heatvol from this checkout (the one being accepted), whatever else
    is installed; output unbuffered, so a command stopped at its budget keeps what it printed."""
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group this script started for ``proc`` (its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _tail(stdout: str, stderr: str, lines: int = 12) -> str:
    text = (stdout.rstrip() + "\n" + stderr.rstrip()).strip().splitlines()
    return "\n".join(text[-lines:])


def _json_lines(text: str) -> list[dict]:
    """The JSON objects printed one per line (other lines ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


# ---------------------------------------------------------------------------- speed part


DATASETS = {"penn": ("penn_action", "penn-action", "penn.h5"),
            "ucla": ("nw_ucla", "nw-ucla", "ucla.h5")}


def _store(key: str, data: Path, work: Path) -> tuple[Path, Job | None]:
    """A dataset's pose store: DATA/<store>.h5 when given, else imported into WORK."""
    sub, fmt, name = DATASETS[key]
    if (data / name).is_file():
        return data / name, None
    return work / name, Job(f"import_{key}", Commands.import_store(fmt, data / sub, work / name),
                            skips_ok=True)


def run_speed(args, sched: dict, data: Path, work: Path, logs: Path, machine: dict,
              start: float | None = None) -> dict:
    part = Part("speed", args.budget, logs, start)
    res: dict = {}
    sim_env = {"NUMBA_ENABLE_CUDASIM": "1"} if args.dry_run else {}
    render_device = "cuda-simulator" if args.dry_run else "cuda"
    cores = os.cpu_count() or 1
    has_pytest = bool(machine.get("pytest"))

    penn, import_penn = _store("penn", data, work)
    eq = sched["equivalence"]
    jobs = [Job("equivalence", Commands.worker(
                "correctness", "--render-device", render_device, "--batches", str(eq["batches"]),
                "--batch", str(eq["batch"]), "--frames", str(eq["frames"]),
                "--sizes", *map(str, eq["sizes"])), env=sim_env)]
    if import_penn:
        jobs.insert(0, import_penn)
    if has_pytest:
        jobs.append(Job("pytest_test_cuda", Commands.pytest_cuda()))
    runs = part.run("correctness", jobs)
    res["correctness"] = _correctness_figures(runs["equivalence"], eq)
    if has_pytest:
        py = runs["pytest_test_cuda"]
        text = [ln.strip() for ln in py["stdout"].splitlines() if ln.strip()]
        res["pytest_test_cuda"] = {
            "status": py["status"], "summary": text[-1] if text else "",
            "gpu_line": next((ln for ln in text if "GPU vs CPU" in ln), None)}
    else:
        res["pytest_test_cuda"] = {"status": "not run: pytest is not installed on this "
                                   "machine (the equivalence above is the same check)"}

    rc = sched["render_cli"]
    if import_penn is None or runs["import_penn"]["status"] == "ok":
        cpu_out, gpu_out = work / "render_cpu.h5", work / "render_cuda.h5"
        common = dict(size=rc["size"], dtype=rc["dtype"], split=rc["split"])
        cpu_workers = max(2, cores // 2)   # 2 on the 2-core box: a different split of the work
        jobs = [Job("cpu", Commands.render(penn, cpu_out, render_device="cpu",
                                           workers=cpu_workers, **common)),
                # the dry run has no GPU: the CPU (one worker) writes the second file, and
                # --render-device cuda must fail with one line
                Job("cuda", Commands.render(penn, gpu_out, workers=1, render_device="cpu"
                                            if args.dry_run else "cuda", **common))]
        if args.dry_run:
            jobs.append(Job("cuda_without_gpu", Commands.render(
                penn, work / "render_nogpu.h5", render_device="cuda", workers=1, **common)))
        runs = part.run("render_cli", jobs)
        res["render_cli"] = _compare_volume_files(cpu_out, gpu_out, runs, args.dry_run)
        res["render_cli"]["settings"] = rc | {"cpu_workers": cpu_workers, "cuda_workers": 1}
    else:
        res["render_cli"] = {"same_file": None, "status": "not run: the Penn Action import "
                             "failed"}

    run = part.run("render_gpu", [Job("render_gpu", Commands.render_gpu(sched["render_gpu"]),
                                      env=sim_env)])["render_gpu"]
    got = _json_lines(run["stdout"])
    res["render_gpu"] = {"status": run["status"], "check_batch": sched["render_gpu_check_batch"],
                         "check_threads": sched["render_gpu_check_threads"],
                         "device": next((r for r in got if r.get("kind") == "device"), None),
                         "rows": [r for r in got if r.get("kind") == "row"]}
    if run["status"] != "ok":
        res["render_gpu"]["tail"] = _tail(run["stdout"], run["stderr"])

    # one mode after the other: timings never share the machine
    tp = sched["throughput"]
    workers = tp.get("workers", max(1, min(8, cores // 2)))
    res["train_throughput"] = {}
    for mode in ("cpu", "gpu"):
        if not penn.exists():
            res["train_throughput"][mode] = {"status": "not run: no Penn Action store"}
            continue
        step = f"train_throughput_{mode}"
        run = part.run(step, [Job(mode, Commands.train_throughput(
            penn, preset=tp["preset"], render=mode, steps=tp["steps"], warmup=tp["warmup"],
            workers=workers))])[mode]
        got = _json_lines(run["stdout"])
        res["train_throughput"][mode] = got[-1] if got else {
            "status": run["status"], "tail": _tail(run["stdout"], run["stderr"])}
    res["part"] = part.summary()
    return res


def _correctness_figures(run: dict, eq: dict) -> dict:
    lines = _json_lines(run["stdout"])
    batches = [r for r in lines if r.get("kind") == "batch"]
    interop = next((r for r in lines if r.get("kind") == "interop"), None)
    errors = [r["error"] for r in lines if r.get("kind") == "error"]
    out = {"status": run["status"], "samples_planned": eq["batches"] * eq["batch"],
           "samples": sum(b["samples"] for b in batches), "batches": len(batches),
           "frames": eq["frames"], "sizes": eq["sizes"], "errors": errors}
    for dtype in ("float32", "float16", "uint8"):
        diffs = [b["max_abs"][dtype] for b in batches if dtype in b["max_abs"]]
        out[f"{dtype}_max_abs"] = max(diffs) if diffs else None
        out[f"{dtype}_bit_identical_batches"] = sum(b["identical"][dtype] for b in batches)
    out["modes"] = sorted({b["mode"] for b in batches})
    out["interop"] = interop
    if run["status"] != "ok":
        out["tail"] = _tail(run["stdout"], run["stderr"])
    return out


def _compare_volume_files(a: Path, b: Path, runs: dict, dry_run: bool) -> dict:
    out = {"cpu": runs["cpu"]["status"], "cuda": runs["cuda"]["status"],
           "gpu_side": "cpu (dry run: no GPU)" if dry_run else "cuda"}
    if dry_run:
        nogpu = runs["cuda_without_gpu"]
        lines = [ln for ln in nogpu["stderr"].strip().splitlines() if ln.strip()]
        out["cuda_without_gpu"] = {"status": nogpu["status"], "message_lines": len(lines),
                                   "message": lines[-1] if lines else ""}
    if runs["cpu"]["status"] != "ok" or runs["cuda"]["status"] != "ok":
        out["same_file"] = None
        return out
    out["byte_identical"] = _sha256(a) == _sha256(b)
    if out["byte_identical"]:
        out["same_file"] = True
        return out
    import h5py
    import numpy as np

    # every dataset and attribute equal, except the part-merge bookkeeping, which depends on
    # how the samples were divided between processes, not on what was rendered
    bookkeeping = {"merged_through"}
    differ = []

    def compare_attrs(x, y, where):
        for k in sorted((set(x.attrs) | set(y.attrs)) - bookkeeping):
            if k not in x.attrs or k not in y.attrs or not np.array_equal(x.attrs[k], y.attrs[k]):
                differ.append(f"{where}attr {k}")

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        compare_attrs(fa, fb, "")
        differ += [f"dataset {k} missing" for k in sorted(set(fa) ^ set(fb))]
        for key in sorted(set(fa) & set(fb)):
            da, db = fa[key], fb[key]
            compare_attrs(da, db, f"{key}: ")
            if da.shape != db.shape or da.dtype != db.dtype:
                differ.append(f"dataset {key}: {da.shape} {da.dtype} vs {db.shape} {db.dtype}")
            elif not da.shape:
                if not np.array_equal(da[()], db[()]):
                    differ.append(f"dataset {key}")
            else:
                for i in range(0, da.shape[0], 32):   # 32 samples at a time
                    if not np.array_equal(da[i:i + 32], db[i:i + 32]):
                        differ.append(f"dataset {key} from row {i}")
                        break
    out["same_file"] = not differ
    out["differences"] = differ
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- accuracy part


def penn_epochs_for(samples_per_s: float | None, train_budget_s: float,
                    default: int) -> tuple[int, str]:
    """Penn Action epochs for the two SlowOnly streams, from the speed part's measured
    single-stream samples/s (``--render gpu``, batch 32): they share the GPU with the four
    NW-UCLA streams (PENN_GPU_SHARE of it) after STARTUP_S; clipped to 8..80 epochs."""
    if not samples_per_s:
        return default, "default (no throughput measured in this OUT)"
    seconds = PENN_GPU_SHARE * max(0.0, train_budget_s - STARTUP_S)
    epochs = int(seconds * samples_per_s / (2 * PENN_TRAIN))
    return max(8, min(80, epochs)), (f"{samples_per_s:.0f} samples/s measured by the speed "
                                     f"part x {seconds:.0f} s of GPU / (2 streams x "
                                     f"{PENN_TRAIN} samples)")


def run_accuracy(args, sched: dict, data: Path, work: Path, logs: Path,
                 start: float | None = None, speed: dict | None = None) -> dict:
    part = Part("accuracy", args.budget, logs, start)
    res: dict = {"schedules": {"penn": sched["penn"], "ucla": sched["ucla"]}}
    (penn, import_penn), (ucla, import_ucla) = _store("penn", data, work), _store("ucla", data,
                                                                                   work)
    imports = {"penn": import_penn, "ucla": import_ucla}
    jobs = [job for job in imports.values() if job]
    runs = part.run("import", jobs) if jobs else {}
    ready = {key: job is None or runs[job.label]["status"] == "ok" for key, job in imports.items()}
    res["stores"] = {"penn": str(penn), "ucla": str(ucla),
                     "given": [key for key, job in imports.items() if job is None]}

    p, u = sched["penn"], sched["ucla"]
    # epochs in proportion to the training budget (a --budget below 540 s trains less);
    # Penn's from the measured throughput when the speed part ran first here
    measured = ((speed or {}).get("train_throughput", {}).get("gpu") or {}).get("samples_per_s")
    if args.penn_epochs is None and not args.dry_run and measured:
        p_epochs, p_from = penn_epochs_for(measured, part.plan["train"], p["epochs"])
    else:
        p_epochs = max(1, round(p["epochs"] * part.scale))
        p_from = "--penn-epochs" if args.penn_epochs is not None else "schedule"
    u_epochs = max(1, round(u["epochs"] * part.scale))
    res["schedules"]["epochs_run"] = {"penn": p_epochs, "ucla": u_epochs, "penn_from": p_from}
    jobs, streams = [], {}
    threads = str(max(1, (os.cpu_count() or 1) // 6))
    if ready["penn"]:
        for mode in ("joint", "limb"):
            name = f"penn_{mode}"
            streams[name] = (penn, work / "runs" / name, p)
            jobs.append(Job(name, Commands.train(
                penn, work / "runs" / name, preset=p[f"preset_{mode}"], epochs=p_epochs,
                batch_size=p["batch_size"], lr=p["lr"], workers=p["workers"],
                device=p["device"], render=p["render"], limb=mode == "limb", sets=p["sets"],
                max_steps=p.get("max_steps"), clip_len=p.get("clip_len"), size=p.get("size")),
                env={"OMP_NUM_THREADS": threads}))
    if ready["ucla"]:
        for modality in UCLA_STREAMS:
            name = f"ucla_{modality.replace('-', '_')}"
            streams[name] = (ucla, work / "runs" / name, u)
            jobs.append(Job(name, Commands.train(
                ucla, work / "runs" / name, preset=u["preset"], epochs=u_epochs,
                batch_size=u["batch_size"], lr=u["lr"], workers=u["workers"],
                device=u["device"], modality=modality, sets=u["sets"],
                max_steps=u.get("max_steps"), clip_len=u.get("clip_len")),
                env={"OMP_NUM_THREADS": threads}))
    for name in streams:   # an earlier run's checkpoints must not stand in for this one's
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
        (work / "results" / f"{name}.json").unlink(missing_ok=True)
    trained = part.run("train", jobs) if jobs else {}
    res["train"] = {}
    for name, run in trained.items():
        m = re.search(r"(\d+) of (\d+) steps \(([^)]*)\)", run["stdout"])
        res["train"][name] = {"status": run["status"],
                              "steps": int(m.group(1)) if m else None,
                              "total_steps": int(m.group(2)) if m else None,
                              "stopped": m.group(3) if m else None}

    jobs, outs = [], {}
    for name, (store, work_dir, s) in streams.items():
        ckpt = work_dir / "last.pt"
        if not ckpt.exists():
            continue
        outs[name] = work / "results" / f"{name}.json"
        outs[name].parent.mkdir(parents=True, exist_ok=True)
        t = s["test"]
        jobs.append(Job(name, Commands.test(
            store, ckpt, outs[name], num_clips=t["num_clips"], flip=t["flip"],
            batch_size=t["batch_size"], workers=t["workers"], device=s["device"],
            render=s.get("render") if name.startswith("penn") else None),
            env={"OMP_NUM_THREADS": threads}))
    tested = part.run("test", jobs) if jobs else {}
    res["test"] = {}
    for name, run in tested.items():
        entry = {"status": run["status"]}
        if run["status"] == "ok" and outs[name].exists():
            full = json.loads(outs[name].read_text())
            entry.update({k: full.get(k) for k in ("top1", "top5", "mean_class", "num_samples",
                                                   "num_clips", "flip", "step", "device",
                                                   "render")})
        res["test"][name] = entry

    jobs = []
    fused = {"penn_joint_limb": (["penn_joint", "penn_limb"], [1, 1]),
             "ucla_4stream": ([f"ucla_{m.replace('-', '_')}" for m in UCLA_STREAMS],
                              UCLA_WEIGHTS)}
    for name, (members, weights) in fused.items():
        if all(res["test"].get(m, {}).get("top1") is not None for m in members):
            jobs.append(Job(name, Commands.ensemble([outs[m] for m in members], weights,
                                                    work / "results" / f"{name}.json")))
    ens = part.run("ensemble", jobs) if jobs else {}
    res["ensemble"] = {}
    for name, run in ens.items():
        entry = {"status": run["status"], "streams": fused[name][0], "weights": fused[name][1]}
        try:
            got = json.loads(run["stdout"][run["stdout"].index("{"):])
            entry.update({k: got.get(k) for k in ("top1", "top5", "mean_class", "num_samples")})
        except ValueError:
            pass
        res["ensemble"][name] = entry
    res["part"] = part.summary()
    return res


# ---------------------------------------------------------------------------- checks, report


def checks(report: dict) -> list[dict]:
    """Each acceptance criterion: target, measured value, pass (None: not measured)."""
    out = []

    def add(name, target, value, ok, unit=""):
        out.append({"check": name, "target": target, "value": value, "unit": unit,
                    "pass": None if value is None else bool(ok)})

    sp = report["parts"].get("speed")
    if sp:
        c = sp.get("correctness", {})
        n = c.get("samples")
        full = n is not None and n == c.get("samples_planned")
        for dtype in ("float32", "float16", "uint8"):
            v = c.get(f"{dtype}_max_abs")
            tol = TARGETS[f"equivalence_{dtype}_max_abs"]
            same = f"{c.get(f'{dtype}_bit_identical_batches')}/{c.get('batches')}"
            if v is None and (c.get("errors") or c.get("status", "ok") != "ok"):
                v = "; ".join(c.get("errors") or [c.get("status")])[:200]   # a failure
            add(f"CUDA = CPU kernels, {dtype}, {n} samples: max abs diff ({same} batches "
                f"bit-identical)", f"<= {tol:g}", v,
                isinstance(v, float) and v <= tol and full)
        py = sp.get("pytest_test_cuda", {})
        summary = py.get("summary")
        add("tests/test_cuda.py -k gpu_full_size (pytest)", "passed", summary,
            summary and "passed" in summary and "failed" not in summary and "error" not in summary
            and py.get("status") == "ok")
        if summary and "passed" not in summary and "failed" not in summary:
            out[-1]["pass"] = None       # skipped: no GPU (the dry run)
        inter = c.get("interop") or {}
        for kind in ("cupy", "torch", "numba"):
            if kind in inter:
                add(f"zero-copy interop: {kind} in and out", "all true",
                    inter[kind].get("ok") if isinstance(inter[kind], dict) else None,
                    isinstance(inter[kind], dict) and inter[kind].get("ok"))
        rc = sp.get("render_cli", {})
        add(f"`heatvol render --render-device cuda` file = CPU file ({rc.get('gpu_side', '?')})",
            "same", rc.get("same_file"), rc.get("same_file"))
        if "cuda_without_gpu" in rc:
            nogpu = rc["cuda_without_gpu"]
            add("dry run: `heatvol render --render-device cuda` without a GPU", "fails, one line",
                f"{nogpu['status']}, {nogpu['message_lines']} line(s)",
                nogpu["status"].startswith("failed") and nogpu["message_lines"] == 1
                and "no usable CUDA GPU" in nogpu["message"])
        rg = sp.get("render_gpu", {})
        b, tpb = rg.get("check_batch", 32), rg.get("check_threads", 128)
        rows = [r for r in rg.get("rows", []) if r["batch"] >= b and r["threads"] == tpb]
        floor = max((r["gpu_over_floor"] for r in rows), default=None)
        ratio = min((r["gpu_over_cpu"] for r in rows), default=None)
        status = rg.get("status", "not run")
        grid = f"{len(rows)} rows" + ("" if status == "ok" else ", grid cut short"
                                      if status == "stopped at budget" else f", {status}")
        every = rg.get("rows", [])
        bad = sum(not r.get("max_abs_vs_cpu", 0) <= 1e-6 for r in every)
        add("render_gpu: every row's GPU volume = CPU volume (<= 1e-6)", "0 rows differ",
            f"{bad} of {len(every)} rows differ" if every else None, bad == 0)
        add(f"render_gpu: GPU time / write floor, worst at B >= {b}, {tpb} threads ({grid})",
            f"<= {TARGETS['render_gpu_floor_ratio_max']}", floor,
            floor is not None and floor <= TARGETS["render_gpu_floor_ratio_max"], "ratio")
        add(f"render_gpu: GPU / all CPU cores samples/s, worst at B >= {b}, {tpb} threads",
            f">= {TARGETS['render_gpu_vs_cpu_min']:.0f}x", ratio,
            ratio is not None and ratio >= TARGETS["render_gpu_vs_cpu_min"], "x")
        g = sp.get("train_throughput", {}).get("gpu", {})
        wait = g.get("data_wait_fraction")
        add("train --render gpu: data wait / step time",
            f"< {TARGETS['train_gpu_data_wait_max']:.0%}",
            wait, wait is not None and wait < TARGETS["train_gpu_data_wait_max"], "%")
    ac = report["parts"].get("accuracy")
    if ac:
        t, e = ac.get("test", {}), ac.get("ensemble", {})
        pj = t.get("penn_joint", {}).get("top1")
        add("Penn Action SlowOnly joint top-1 (10 clips + flip)",
            f">= {TARGETS['penn_slowonly_joint_top1']:.0%}", pj,
            pj is not None and pj >= TARGETS["penn_slowonly_joint_top1"], "%")
        pf = e.get("penn_joint_limb", {}).get("top1")
        add("Penn Action joint + limb fusion top-1", "> joint", pf,
            pf is not None and pj is not None and pf > pj, "%")
        uj = t.get("ucla_joint", {}).get("top1")
        add("NW-UCLA DualHead-Net joint top-1", f">= {TARGETS['ucla_dualhead_joint_top1']:.0%}",
            uj, uj is not None and uj >= TARGETS["ucla_dualhead_joint_top1"], "%")
        uf = e.get("ucla_4stream", {}).get("top1")
        add("NW-UCLA DualHead-Net 4-stream (2:2:1:1) top-1",
            f">= {TARGETS['ucla_dualhead_4stream_top1']:.0%}", uf,
            uf is not None and uf >= TARGETS["ucla_dualhead_4stream_top1"], "%")
    return out


def _fmt(v, unit: str = "") -> str:
    if unit == "%" and isinstance(v, float):
        return f"{100 * v:.2f} %"
    if unit == "x" and isinstance(v, float):
        return f"{v:.0f}x" if v >= 10 else f"{v:.3g}x"
    if unit == "ratio" and isinstance(v, float):
        return f"{v:.2f}" if v < 100 else f"{v:.3g}"
    if v is None:
        return "not measured"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def _cell(text: str) -> str:
    """Free text inside a Markdown table cell: one line, no column breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def markdown(report: dict) -> str:
    m = report.get("machine", {})
    dry = " --dry-run" if report["dry_run"] else ""
    lines = [f"## GPU acceptance (benchmarks/gpu_acceptance.py{dry})",
             "",
             f"Machine: {m.get('gpu', '?')} ({m.get('nvidia_smi') or 'no nvidia-smi'}); "
             f"{m.get('cpu_count', '?')} CPU cores "
             f"({m.get('cpu', '?')}); torch {m.get('torch', '?')}, numba {m.get('numba', '?')} "
             f"(numba.cuda: {m.get('numba_cuda', '?')}), CuPy {m.get('cupy') or 'absent'}. "
             f"Run {report['started']}, commit {report.get('commit', '?')}."
             + (" **Dry run: CPU only, CUDA simulator, tiny settings — the figures mean "
                "nothing.**" if report["dry_run"] else ""),
             "",
             "| check | target | measured | pass |", "|---|---|---|---|"]
    for c in report["checks"]:
        ok = {True: "yes", False: "**no**", None: "—"}[c["pass"]]
        value = _cell(_fmt(c["value"], c.get("unit", "")))
        lines.append(f"| {c['check']} | {c['target']} | {value} | {ok} |")
    sp = report["parts"].get("speed")
    if sp and sp.get("render_gpu", {}).get("rows"):
        lines += ["", "render_gpu (T = 48, M = 2, K = 17, float32; kernel alone, CUDA events; "
                  "CPU: render_batch on all cores; floor: a device fill of the same bytes):", "",
                  "| mode | size | B | threads/block | CPU samples/s | GPU samples/s | GPU/CPU "
                  "| fill GB/s | GPU time / floor |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sp["render_gpu"]["rows"]:
            lines.append(f"| {r['mode']} | {r['size']}x{r['size']} | {r['batch']} | "
                         f"{r['threads']} | {r['cpu_samples_per_s']:.1f} | "
                         f"{r['gpu_samples_per_s']:.1f} | {r['gpu_over_cpu']:.0f}x | "
                         f"{r['fill_gb_per_s']:.0f} | {r['gpu_over_floor']:.2f} |")
    if sp and sp.get("train_throughput"):
        lines += ["", "| train_throughput | model | batch | workers | samples/s | step ms | "
                  "data wait |", "|---|---|---|---|---|---|---|"]
        for mode, r in sp["train_throughput"].items():
            if "samples_per_s" in r:
                height, width = (r["size"], r["size"]) if isinstance(r["size"], int) \
                    else r["size"]
                lines.append(f"| `--render-device {_RENDER_DEVICE[mode]}` | {r['model']} "
                             f"{r['mode']} {height}x{width}x{r['clip_len']} | {r['batch_size']} | {r['workers']} | "
                             f"{r['samples_per_s']:.1f} | {r['step_ms']:.0f} | "
                             f"{r['data_wait_fraction']:.1%} |")
            else:
                reason = r.get("skipped") or r.get("status") or "not run"
                lines.append(f"| `--render-device {_RENDER_DEVICE[mode]}` | not run: "
                             f"{_cell(reason)} | | | | | |")
    ac = report["parts"].get("accuracy")
    if ac:
        er = ac["schedules"].get("epochs_run", {})
        lines += ["", "| stream | schedule | steps run | top-1 | top-5 | mean class |",
                  "|---|---|---|---|---|---|"]
        for name, t in ac.get("test", {}).items():
            s = ac["schedules"]["penn" if name.startswith("penn") else "ucla"]
            tr = ac.get("train", {}).get(name, {})
            sched = (f"{er.get('penn' if name.startswith('penn') else 'ucla')} epochs, batch "
                     f"{s['batch_size']}, lr {s['lr']}; test {s['test']['num_clips']} clips"
                     + (" + flip" if s["test"]["flip"] else ""))
            ran = f"{tr.get('steps')} / {tr.get('total_steps')}" + (
                f" ({tr['status']})" if tr.get("status", "ok") != "ok" else "")
            lines.append(f"| {name} | {sched} | {ran} | "
                         f"{_pct(t.get('top1'))} | {_pct(t.get('top5'))} | "
                         f"{_pct(t.get('mean_class'))} |")
        for name, e in ac.get("ensemble", {}).items():
            lines.append(f"| {name} (fusion {':'.join(map(str, e['weights']))}) | | | "
                         f"{_pct(e.get('top1'))} | {_pct(e.get('top5'))} | "
                         f"{_pct(e.get('mean_class'))} |")
        if er.get("penn_from"):
            lines += ["", f"Penn Action epochs: {er['penn']}, from {er['penn_from']}."]
    lines += ["", "Step times (s, budget in brackets): " + "; ".join(
        f"{part}: " + ", ".join(f"{k} {v['wall_s']:.0f} [{v['budget_s']:.0f}]"
                                for k, v in p["part"]["steps"].items())
        for part, p in report["parts"].items())]
    return "\n".join(lines) + "\n"


def one_screen(report: dict) -> str:
    m = report.get("machine", {})
    dry = " (DRY RUN: CPU, simulator, tiny settings)" if report["dry_run"] else ""
    rows = [f"GPU acceptance{dry}"
            f" on {m.get('gpu', '?')}, {m.get('cpu_count', '?')} CPU cores"]
    for part, p in report["parts"].items():
        rows.append(f"  {part}: {p['part']['wall_s']:.0f} s of {p['part']['budget_s']:.0f} s")
    for c in report["checks"]:
        mark = {True: "PASS", False: "FAIL", None: " -- "}[c["pass"]]
        value = _fmt(c["value"], c.get("unit", ""))
        rows.append(f"  [{mark}] {c['check']}: {value} (target {c['target']})")
    rows.append(f"  JSON: {report['json']}  table: {report['markdown']}  logs: "
                f"{Path(report['json']).with_name('logs.tar.gz')}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- workers
# Run in a fresh interpreter by Commands.worker: the parent never imports numba or torch.


def _worker_probe(_argv) -> int:
    import importlib.util

    info = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "host": platform.node(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    for mod in ("numpy", "numba", "torch", "cupy", "h5py", "cv2", "click", "scipy", "tqdm",
                "matplotlib", "yaml", "pytest", "hypothesis"):
        if importlib.util.find_spec(mod) is None:
            info[mod] = None
            continue
        try:
            info[mod] = getattr(__import__(mod), "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - a broken install is a finding
            info[mod] = f"broken: {type(exc).__name__}: {exc}"
    try:
        import heatvol

        info["heatvol"] = f"{heatvol.__version__} ({Path(heatvol.__file__).parent})"
    except Exception as exc:  # noqa: BLE001
        info["heatvol"] = None
        info["heatvol_error"] = f"{type(exc).__name__}: {exc}"
    info["gpu"] = "none"
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["torch_cuda"] = torch.version.cuda
    except Exception as exc:  # noqa: BLE001
        info["gpu"] = f"torch.cuda failed: {exc}"
    try:
        from numba import cuda

        info["numba_cuda"] = getattr(cuda, "implementation", "built-in")
        info["numba_cuda_available"] = bool(cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        info["numba_cuda"] = f"absent: {exc}"
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = q.stdout.strip()
    print(json.dumps(info), flush=True)
    return 0


def _random_case(rng, batch, persons, frames, size, K=17):
    """Realistic-range poses with the hard cases: missing joints, NaN / inf / far-off
    coordinates, NaN and near-threshold scores, half-pixel positions, several persons."""
    import numpy as np

    kp = rng.uniform(-6, size + 6, (batch, persons, frames, K, 2)).astype(np.float32)
    half = rng.random(kp.shape) < 0.1
    kp[half] = (rng.integers(-8, 2 * size + 8, half.sum()) / 2).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -0.0], np.float32)
    odd = rng.random(kp.shape) < 0.01
    kp[odd] = rng.choice(special, odd.sum())
    sc = rng.uniform(0, 1.2, (batch, persons, frames, K)).astype(np.float32)
    sc[rng.random(sc.shape) < 0.1] = 0
    sc[rng.random(sc.shape) < 0.01] = np.nan
    sc[rng.random(sc.shape) < 0.01] = np.float32(0.00099)
    return kp, sc


def _worker_correctness(argv) -> int:
    """Equivalence of the CUDA (or simulated) renderer with the CPU one through the front door,
    one JSON line per batch (so a run stopped at its budget keeps what it did), then interop."""
    p = argparse.ArgumentParser()
    p.add_argument("--render-device", required=True)
    p.add_argument("--batches", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--sizes", type=int, nargs="+", required=True)
    a = p.parse_args(argv)
    import numpy as np

    import heatvol

    rng = np.random.default_rng(2024)
    tol = {"float32": 1e-6, "float16": 1e-3, "uint8": 1}
    for i in range(a.batches):
        size = a.sizes[i % len(a.sizes)]
        mode = ("joint", "limb")[(i // len(a.sizes)) % 2] if a.batches > len(a.sizes) \
            else ("joint", "limb")[i % 2]
        persons = int(rng.integers(1, 4))
        kp, sc = _random_case(rng, a.batch, persons, a.frames, size)
        row = {"kind": "batch", "index": i, "mode": mode, "size": size, "persons": persons,
               "samples": a.batch, "max_abs": {}, "identical": {}}
        for dtype in tol:
            kw = dict(size=size, mode=mode, sigma=0.6, dtype=dtype)
            try:
                got = heatvol.render_batch(kp, sc, render_device=a.render_device, **kw)
            except Exception as exc:  # noqa: BLE001 - a failing GPU render is the finding
                print(json.dumps({"kind": "error", "index": i, "dtype": dtype,
                                  "error": f"{type(exc).__name__}: {exc}"}), flush=True)
                break
            want = heatvol.render_batch(kp, sc, render_device="cpu", **kw)
            row["max_abs"][dtype] = float(np.abs(got.astype(np.float32)
                                                 - want.astype(np.float32)).max())
            row["identical"][dtype] = bool(np.array_equal(got.view(np.uint8),
                                                          want.view(np.uint8)))
        else:
            print(json.dumps(row), flush=True)
            continue
        break   # the GPU render failed: the interop checks may still say more
    print(json.dumps({"kind": "interop", **_interop(a.render_device, rng)}), flush=True)
    return 0


def _interop(render_device: str, rng) -> dict:
    """Device arrays in, device arrays out, ``out=`` filled in place: CuPy and torch on a GPU;
    Numba device arrays (the only kind the simulator has) in both."""
    import numpy as np

    import heatvol

    size = 16 if render_device == "cuda" else 6
    kp, sc = _random_case(rng, 2, 2, 4 if render_device == "cuda" else 1, size)
    kinds = {"numba": _interop_numba}
    out = {}
    if render_device == "cuda":
        kinds |= {"cupy": _interop_cupy, "torch": _interop_torch}
    else:
        out = {"cupy": "not run: dry run (no GPU)", "torch": "not run: dry run (no GPU)"}
    for kind, check in kinds.items():
        modes = []
        for mode in ("joint", "limb"):
            want = heatvol.render_batch(kp, sc, size=size, mode=mode, render_device="cpu")
            try:
                res = check(kp, sc, size, mode, want, render_device)
            except ImportError as exc:
                res = {"ok": None, "error": f"not installed: {exc}"}
            except Exception as exc:  # noqa: BLE001 - an interop failure is a finding
                res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            modes.append({"mode": mode} | res)
        oks = [m["ok"] for m in modes]
        out[kind] = {"ok": None if None in oks else all(oks), "modes": modes}
    return out


def _interop_numba(kp, sc, size, mode, want, render_device):
    import numpy as np
    from numba import cuda

    d_kp, d_sc = cuda.to_device(kp), cuda.to_device(sc)
    dev = heatvol_render(d_kp, d_sc, size=size, mode=mode, render_device=render_device)
    buf = cuda.device_array(want.shape, np.float16)
    ret = heatvol_render(d_kp, d_sc, size=size, mode=mode, dtype=np.float16, out=buf,
                         render_device=render_device)
    res = {"out_kind": type(dev).__module__.split(".")[0],
           "equal": bool(np.array_equal(dev.copy_to_host(), want)),
           "out_in_place": ret is buf and bool(np.array_equal(
               buf.copy_to_host().view(np.uint16), want.astype(np.float16).view(np.uint16)))}
    return res | {"ok": res["out_kind"] == "numba" and res["equal"] and res["out_in_place"]}


def _interop_cupy(kp, sc, size, mode, want, render_device):
    import cupy
    import numpy as np

    c_kp, c_sc = cupy.asarray(kp), cupy.asarray(sc)
    got = heatvol_render(c_kp, c_sc, size=size, mode=mode, render_device=render_device)
    buf = cupy.empty(want.shape, cupy.float16)
    ptr = buf.data.ptr
    ret = heatvol_render(c_kp, c_sc, size=size, mode=mode, dtype=np.float16, out=buf,
                         render_device=render_device)
    res = {"out_kind": type(got).__module__.split(".")[0],
           "equal": bool(np.array_equal(cupy.asnumpy(got), want)),
           "out_in_place": ret is buf and buf.data.ptr == ptr and bool(np.array_equal(
               cupy.asnumpy(buf).view(np.uint16), want.astype(np.float16).view(np.uint16)))}
    return res | {"ok": res["out_kind"] == "cupy" and res["equal"] and res["out_in_place"]}


def _interop_torch(kp, sc, size, mode, want, render_device):
    import numpy as np
    import torch

    t_kp, t_sc = torch.from_numpy(kp).cuda(), torch.from_numpy(sc).cuda()
    got = heatvol_render(t_kp, t_sc, size=size, mode=mode, render_device=render_device)
    buf = torch.empty(want.shape, dtype=torch.bfloat16, device="cuda")
    ptr = buf.data_ptr()
    ret = heatvol_render(t_kp, t_sc, size=size, mode=mode, dtype=torch.bfloat16, out=buf,
                         render_device=render_device)
    bf16 = torch.from_numpy(want).to(torch.bfloat16)   # torch's round-to-nearest-even
    res = {"out_kind": type(got).__module__.split(".")[0], "out_on_gpu": bool(got.is_cuda),
           "equal": bool(np.array_equal(got.cpu().numpy(), want)),
           "out_in_place": ret is buf and buf.data_ptr() == ptr and bool(torch.equal(
               buf.cpu().view(torch.int16), bf16.view(torch.int16)))}
    return res | {"ok": res["out_kind"] == "torch" and res["out_on_gpu"] and res["equal"]
                  and res["out_in_place"]}


def heatvol_render(kp, sc, **kw):
    import heatvol

    return heatvol.render_batch(kp, sc, sigma=0.6, **kw)


WORKERS = {"probe": _worker_probe, "correctness": _worker_correctness}


# ---------------------------------------------------------------------------- main


def _subset(data: Path, dest: Path, every: dict) -> Path:
    """Dry run: every n-th file of each dataset, as symlinks (all classes, both splits)."""
    for sub, n in (("penn_action", every["penn_every"]), ("nw_ucla", every["ucla_every"])):
        for store in ("penn.h5", "ucla.h5"):   # given stores are used whole
            if (data / store).is_file() and not (dest / store).exists():
                (dest / store).symlink_to((data / store).resolve())
        if not (data / sub).is_dir():
            continue
        folder = dest / sub
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in sorted((data / sub).iterdir())[::n]:
            (folder / f.name).symlink_to(f.resolve())
    return dest


def _bundle(out: Path) -> Path:
    """OUT/logs.tar.gz: every command's output, the test and ensemble results (per-sample
    scores) and the training logs; small enough to bring back from a lent machine."""
    import tarfile

    path = out / "logs.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(out.glob("logs/*")) + sorted(out.glob("work/results/*.json")) + \
                sorted(out.glob("work/runs/*/log.csv")) + sorted(out.glob("work/runs/*/train.log")):
            tar.add(f, arcname=str(f.relative_to(out)))
    return path


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return WORKERS[argv[1]](argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--data", required=True, type=Path,
                   help="folder holding penn_action/ and nw_ucla/")
    p.add_argument("--out", required=True, type=Path, help="results folder (created)")
    p.add_argument("--part", choices=["speed", "accuracy", "all"], default="all")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                   help=f"seconds per part [default {DEFAULT_BUDGET_S}]")
    p.add_argument("--penn-epochs", type=int, default=None,
                   help=f"Penn Action SlowOnly epochs at the default budget "
                        f"[{FULL['penn']['epochs']}]")
    p.add_argument("--ucla-epochs", type=int, default=None,
                   help=f"NW-UCLA DualHead-Net epochs at the default budget "
                        f"[{FULL['ucla']['epochs']}]")
    p.add_argument("--penn-render", choices=["gpu", "cpu"], default=None,
                   help="where the Penn Action volumes are rendered for training and testing "
                        "[gpu; the dry run: cpu]: cpu still gets the accuracy figures if the "
                        "speed part found the in-step GPU renderer failing")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU only: CUDA simulator, tiny settings, a data subset")
    args = p.parse_args(argv)
    for sub, store in (("penn_action", "penn.h5"), ("nw_ucla", "ucla.h5")):
        if not (args.data / sub).is_dir() and not (args.data / store).is_file():
            print(f"gpu_acceptance.py: {args.data / sub}: no such folder (--data must hold "
                  f"penn_action/ and nw_ucla/, or the pose stores penn.h5 and ucla.h5)",
                  file=sys.stderr)
            return 2
    # versions, the GPU, whether pytest / hypothesis / CuPy are here (counted in the first part)
    t_start = time.monotonic()
    probe = subprocess.run(Commands.worker("probe"), capture_output=True, text=True,
                           timeout=120, env=_child_env())
    machine = (_json_lines(probe.stdout) or [{"error": _tail(probe.stdout, probe.stderr)}])[-1]
    if not args.dry_run and not (machine.get("numba_cuda_available") and machine.get("torch_cuda")):
        # no silent fallback: a GPU run without a usable GPU says so at once
        print(f"gpu_acceptance.py: no usable CUDA GPU here (torch: {machine.get('gpu')}, "
              f"numba.cuda available: {machine.get('numba_cuda_available')}); --dry-run runs "
              f"without one", file=sys.stderr)
        return 2
    parts = ["speed", "accuracy"] if args.part == "all" else [args.part]
    missing = sorted({m for part in parts for m in NEEDS[part] if not machine.get(m)})
    if not (args.data / "penn.h5").is_file() and not machine.get("scipy"):
        missing.append("scipy (to import Penn Action's .mat files; or give penn.h5 in --data)")
    if missing:
        print(f"gpu_acceptance.py: missing on this machine: {', '.join(missing)} (see "
              f"docs/gpu.md, 'What the GPU machine needs')", file=sys.stderr)
        return 2

    out = args.out.resolve()
    logs, work = out / "logs", out / "work"
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    sched = json.loads(json.dumps(DRY if args.dry_run else FULL))   # a copy to adjust
    for key, value in (("penn", args.penn_epochs), ("ucla", args.ucla_epochs)):
        if value is not None:
            sched[key]["epochs"] = value
    if args.penn_render:
        sched["penn"]["render"] = args.penn_render
    data = args.data.resolve()
    if args.dry_run:
        data = _subset(data, work / "data_subset", DRY["subset"])

    json_path, md_path = out / "acceptance.json", out / "acceptance.md"
    report = {"schema": SCHEMA, "parts": {}}
    if json_path.exists():
        try:
            old = json.loads(json_path.read_text())
            if old.get("schema") == SCHEMA and old.get("dry_run") == args.dry_run:
                report = old          # a later part joins the earlier one's report
        except json.JSONDecodeError:
            pass
    report.update({"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                     time.gmtime()),
                   "commit": _commit(), "command": " ".join(["gpu_acceptance.py", *argv]),
                   "targets": TARGETS, "json": str(json_path), "markdown": str(md_path)})
    report["machine"] = machine
    for name in parts:
        print(f"gpu_acceptance: part {name} (budget {args.budget:.0f} s)"
              + (" [dry run]" if args.dry_run else ""), flush=True)
        start = t_start if name == parts[0] else None
        if name == "speed":
            report["parts"][name] = run_speed(args, sched, data, work, logs, machine, start)
        else:
            report["parts"][name] = run_accuracy(args, sched, data, work, logs, start,
                                                 report["parts"].get("speed"))
        report["checks"] = checks(report)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
        md_path.write_text(markdown(report))
        _bundle(out)
    print(one_screen(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
