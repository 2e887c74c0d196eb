"""CUDA backend: the Numba CUDA kernels under the simulator (CI, no GPU), the front door's
device rules, and (skipped without one) the full equivalence on a real GPU.

Why subprocesses: Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, and
the other test files import Numba (CPU kernels) long before this one runs. Setting the variable
here would do nothing, and setting it for the whole session would put every CPU test in a
simulated-CUDA process. So each simulator check runs a short script in a fresh interpreter
with the variable set; the CPU results in this process are untouched. The simulator runs every
CUDA thread as a Python thread, so shapes are tiny and blocks have 8 threads (results do not
depend on the block size: tested).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import heatvol

ROOT = Path(__file__).resolve().parents[1]
K = heatvol.layout("coco17").num_joints


def run_simulated(code: str, timeout: int = 240) -> dict:
    """Run ``code`` under the CUDA simulator; it prints one JSON line, returned as a dict."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CASES = r"""
import json, math
import numpy as np
import heatvol
from heatvol.kernels import cpu, cuda as kc
from heatvol.kernels.reference import render_joints_reference, render_limbs_reference
LAY = heatvol.layout("coco17")
LIMBS = np.array(LAY.limbs, np.int64)
K = 17
SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, 2.0 ** 60, -0.0], np.float32)

def case(rng, batch, persons, frames, height, width):
    extent = max(height, width)
    kp = rng.uniform(-6, extent + 6, (batch, persons, frames, K, 2)).astype(np.float32)
    half = rng.random(kp.shape) < 0.15  # half-pixel boundaries (int() truncation)
    kp[half] = (rng.integers(-8, 2 * extent + 8, half.sum()) / 2).astype(np.float32)
    special = rng.random(kp.shape) < 0.04  # NaN / inf / far-off coordinates
    kp[special] = rng.choice(SPECIAL, special.sum())
    sc = rng.uniform(0, 1.5, (batch, persons, frames, K)).astype(np.float32)
    sc[rng.random(sc.shape) < 0.15] = 0  # missing joints
    sc[rng.random(sc.shape) < 0.03] = np.nan
    sc[rng.random(sc.shape) < 0.03] = np.float32(0.00099)
    for limb in rng.integers(0, len(LAY.limbs), 5):  # degenerate / short limbs
        a, b = LAY.limbs[limb]
        off = np.float32(rng.choice([0.0, 0.3, -0.7, 0.99, 1.0]))
        kp[..., b, 0] = kp[..., a, 0] + off
        kp[..., b, 1] = kp[..., a, 1] - off / 2
    return kp, sc

def reference(kp, sc, mode, size, sigma, use_score):
    fn = (lambda k, s: render_joints_reference(k, s, size, sigma, use_score)) if mode == "joint" \
        else (lambda k, s: render_limbs_reference(k, s, LAY.limbs, size, sigma, use_score))
    return np.stack([fn(k, s) for k, s in zip(kp, sc)])
"""


def test_simulator_kernels_equal_cpu_kernels_and_reference():
    """Random small batches, both modes, float32/float16/uint8: bit-identical to the CPU kernels
    (same float32 operations, no FMA) and within 1e-6 of the reference."""
    res = run_simulated(CASES + r"""
worst, mismatches, runs = 0.0, [], 0
rng = np.random.default_rng(1234)
for trial in range(6):
    mode = ("joint", "limb")[trial % 2]
    batch, persons, frames = int(rng.integers(1, 3)), int(rng.integers(0, 4)), int(rng.integers(1, 3))
    height, width = int(rng.integers(3, 11)), int(rng.integers(3, 11))
    sigma, use_score = float(rng.uniform(0.3, 1.5)), bool(trial % 3)
    kp, sc = case(rng, batch, persons, frames, height, width)
    limbs = None if mode == "joint" else LIMBS
    C = K if mode == "joint" else len(LAY.limbs)
    want = reference(kp, sc, mode, (height, width), sigma, use_score)
    for dtype in (np.float32, np.float16, np.uint8):
        got = np.full((batch, C, frames, height, width), 3, dtype)
        kc.render_into(kp, sc, limbs, got, sigma, use_score, allow_simulator=True,
                       threads_per_block=8)
        cpu_out = np.empty_like(got)
        cpu.render_into(kp, sc, limbs, cpu_out, sigma, use_score)
        runs += 1
        if not np.array_equal(got.view(np.uint8), cpu_out.view(np.uint8)):
            mismatches.append([trial, mode, np.dtype(dtype).name])
        if dtype == np.float32:
            worst = max(worst, float(np.max(np.abs(got - want))) if got.size else 0.0)
print(json.dumps({"worst": worst, "mismatches": mismatches, "runs": runs}))
""")
    assert res["runs"] == 18
    assert res["mismatches"] == []
    assert res["worst"] <= 1e-6


def test_simulator_bfloat16_many_persons_and_block_size():
    """bfloat16 bits = torch's round-to-nearest-even of the float32 result; 35 persons (two
    shared-memory passes, merged) and block sizes 8 / 32 give the same volume."""
    pytest.importorskip("torch")
    res = run_simulated(CASES + r"""
import torch
rng = np.random.default_rng(99)
out = {}
for mode in ("joint", "limb"):
    limbs = None if mode == "joint" else LIMBS
    C = K if mode == "joint" else len(LAY.limbs)
    kp, sc = case(rng, 1, 2, 2, 7, 9)
    full = np.empty((1, C, 2, 7, 9), np.float32)
    cpu.render_into(kp, sc, limbs, full, 0.8, True)
    bits = np.zeros(full.shape, np.int16)
    kc.render_into(kp, sc, limbs, bits, 0.8, True, out_kind=kc.OUT_BFLOAT16_BITS,
                   allow_simulator=True, threads_per_block=8)
    want = torch.from_numpy(full).to(torch.bfloat16).view(torch.int16).numpy()
    out[mode + "_bf16"] = bool(np.array_equal(bits, want))
    # front door: bfloat16 through the simulated CUDA backend is a torch tensor
    t = heatvol.render_batch(kp, sc, size=(7, 9), sigma=0.8, mode=mode, dtype="bfloat16",
                             render_device="cuda-simulator")
    out[mode + "_front_bf16"] = bool(t.dtype == torch.bfloat16 and np.array_equal(
        t.view(torch.int16).numpy(), want))
# 35 persons in one frame: two passes over the persons table (32 + 3)
kp, sc = case(rng, 1, 35, 1, 5, 6)
kp[0, :, 0, :, :] = rng.uniform(0, 6, (35, K, 2)).astype(np.float32)
sc[...] = rng.uniform(0.1, 1.0, sc.shape).astype(np.float32)
for mode in ("joint", "limb"):
    limbs = None if mode == "joint" else LIMBS
    C = K if mode == "joint" else len(LAY.limbs)
    want = np.empty((1, C, 1, 5, 6), np.float32)
    cpu.render_into(kp, sc, limbs, want, 0.6, True)
    for dtype in (np.float32, np.uint8):
        ref = want if dtype == np.float32 else np.floor(want * np.float32(255) + np.float32(0.5)).clip(0, 255).astype(np.uint8)
        results = []
        for threads in (8, 32):
            got = np.empty(want.shape, dtype)
            kc.render_into(kp, sc, limbs, got, 0.6, True, allow_simulator=True,
                           threads_per_block=threads)
            results.append(bool(np.array_equal(got, ref)))
        out[f"{mode}_35_{np.dtype(dtype).name}"] = results
print(json.dumps(out))
""")
    assert res == {"joint_bf16": True, "joint_front_bf16": True, "limb_bf16": True,
                   "limb_front_bf16": True, "joint_35_float32": [True, True],
                   "joint_35_uint8": [True, True], "limb_35_float32": [True, True],
                   "limb_35_uint8": [True, True]}


def test_simulator_front_door_device_arrays_and_auto():
    """Under the simulator: auto still picks the CPU kernels, "cuda" is the one-line error,
    Numba device arrays in -> device array out, out= a device array filled in place."""
    res = run_simulated(CASES + r"""
from numba import cuda
from heatvol.render.backends import select_backend
rng = np.random.default_rng(5)
kp, sc = case(rng, 2, 2, 2, 6, 8)
out = {"auto_is_cpu": select_backend("auto") is select_backend("cpu"),
       "available": kc.is_available()}
try:
    heatvol.render_batch(kp, sc, size=(6, 8), render_device="cuda")
except RuntimeError as exc:
    out["cuda_error"] = str(exc)
want = heatvol.render_batch(kp, sc, size=(6, 8), mode="limb", render_device="cpu")
host = heatvol.render_batch(kp, sc, size=(6, 8), mode="limb", render_device="cuda-simulator")
out["numpy_in_numpy_out"] = isinstance(host, np.ndarray) and bool(np.array_equal(host, want))
d_kp, d_sc = cuda.to_device(kp), cuda.to_device(sc)
dev = heatvol.render_batch(d_kp, d_sc, size=(6, 8), mode="limb", render_device="cuda-simulator")
out["device_out_kind"] = type(dev).__module__.split(".")[0]
out["device_equal"] = bool(np.array_equal(dev.copy_to_host(), want))
buf = cuda.device_array(want.shape, np.float16)
ret = heatvol.render_batch(d_kp, d_sc, size=(6, 8), mode="limb", dtype=np.float16, out=buf,
                           render_device="cuda-simulator")
out["out_filled"] = ret is buf and bool(np.array_equal(
    buf.copy_to_host().view(np.uint16), want.astype(np.float16).view(np.uint16)))
try:
    heatvol.render_batch(d_kp, d_sc, size=(6, 8), render_device="cpu")
except ValueError as exc:
    out["device_cpu_error"] = "need render_device 'cuda'" in str(exc)
print(json.dumps(out))
""")
    assert res["auto_is_cpu"] is True and res["available"] is False
    assert res["cuda_error"].startswith("render_device='cuda' asked for but no usable CUDA GPU")
    assert "\n" not in res["cuda_error"]
    assert res["numpy_in_numpy_out"] and res["device_equal"] and res["out_filled"]
    assert res["device_out_kind"] == "numba" and res["device_cpu_error"]


def test_simulator_render_store_gives_the_cpu_file(tmp_path):
    """The batched GPU pipeline (pinned staging, stream, async copies, writer thread) under the
    simulator writes the same volume file as the CPU path (uneven last batch, M = 0..2)."""
    from heatvol import PoseWriter
    from heatvol.render import render_store
    from heatvol.volumes import VolumeFile

    poses = tmp_path / "poses.h5"
    rng = np.random.default_rng(3)
    with PoseWriter(poses, layout="coco17", classes=["a", "b"]) as w:
        for i in range(5):
            m, t = i % 3, 4 + i
            kp = rng.uniform(20, 200, (m, t, K, 2)).astype(np.float32)
            sc = rng.uniform(0.2, 1, (m, t, K)).astype(np.float32)
            w.append(f"s{i}", kp, sc, label=i % 2, img_shape=(240, 320))
    common = dict(size=8, clip_len=2, mode="limb", dtype="uint8", progress=False)
    render_store(poses, tmp_path / "cpu.h5", render_device="cpu", **common)
    res = run_simulated(f"""
import json
from heatvol.render import render_store
r = render_store({str(poses)!r}, {str(tmp_path / 'gpu.h5')!r}, render_device="cuda-simulator",
                 gpu_batch=2, **{common!r})
print(json.dumps(r))
""")
    assert res == {"rendered": 5, "skipped": 0, "total": 5}
    with VolumeFile(tmp_path / "cpu.h5") as a, VolumeFile(tmp_path / "gpu.h5") as b:
        assert a.names() == b.names() and a.settings == b.settings
        for i in range(len(a)):
            assert np.array_equal(a[i], b[i]) and a.label(i) == b.label(i)


def test_cuda_backend_without_gpu_is_one_line_and_auto_is_cpu():
    from heatvol.kernels import cuda as kernels
    from heatvol.render.backends import select_backend

    if kernels.is_available():
        pytest.skip("a usable CUDA GPU is present")
    assert select_backend("auto") is select_backend("cpu")
    with pytest.raises(RuntimeError, match=r"^render_device='cuda' asked for but no usable CUDA "
                                           r"GPU/numba-cuda found") as info:
        heatvol.render_batch(np.zeros((1, 1, 2, K, 2)), np.zeros((1, 1, 2, K)), size=8,
                             render_device="cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="cuda-simulator"):
        heatvol.render_batch(np.zeros((1, 1, 2, K, 2)), np.zeros((1, 1, 2, K)), size=8,
                             render_device="cuda-simulator")


def test_importing_heatvol_does_not_import_numba_cuda():
    code = ("import sys, heatvol, heatvol.render, heatvol.kernels.cuda, heatvol.volumes;"
            "print('numba.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def _real_gpu() -> bool:
    try:
        from heatvol.kernels import cuda as kernels

        return kernels.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _real_gpu(), reason="needs a real CUDA GPU (numba-cuda, CuPy or torch)")
def test_gpu_full_size_equivalence_1000_samples():
    """On hardware: 1,000 random realistic samples (T=48, 56x56 and 64x64, M<=3, joint and limb)
    vs the CPU kernels: max abs difference <= 1e-6 (bit-identical expected, see docs/gpu.md)."""
    from heatvol.kernels import cpu
    from heatvol.kernels import cuda as kernels

    lay = heatvol.layout("coco17")
    limbs_all = np.array(lay.limbs, np.int64)
    rng = np.random.default_rng(2024)
    worst, identical, total = 0.0, 0, 0
    for chunk in range(40):  # 40 batches x 25 samples
        size = (56, 64)[chunk % 2]
        mode = ("joint", "limb")[(chunk // 2) % 2]
        persons = int(rng.integers(1, 4))
        kp = rng.uniform(-5, size + 5, (25, persons, 48, K, 2)).astype(np.float32)
        sc = rng.uniform(0, 1.2, (25, persons, 48, K)).astype(np.float32)
        sc[rng.random(sc.shape) < 0.1] = 0
        limbs = None if mode == "joint" else limbs_all
        channels = K if mode == "joint" else len(lay.limbs)
        got = np.empty((25, channels, 48, size, size), np.float32)
        want = np.empty_like(got)
        kernels.render_into(kp, sc, limbs, got, 0.6, True)
        cpu.render_into(kp, sc, limbs, want, 0.6, True)
        worst = max(worst, float(np.abs(got - want).max()))
        identical += int(np.array_equal(got, want))
        total += 1
        for dtype in (np.float16, np.uint8):
            low = np.empty(got.shape, dtype)
            kernels.render_into(kp, sc, limbs, low, 0.6, True)
            low_cpu = np.empty_like(low)
            cpu.render_into(kp, sc, limbs, low_cpu, 0.6, True)
            assert np.abs(low.astype(np.float32) - low_cpu.astype(np.float32)).max() <= \
                (1 if dtype == np.uint8 else 1e-3)
    print(f"GPU vs CPU: worst {worst:.3g}, {identical}/{total} batches bit-identical")
    assert worst <= 1e-6


def test_simulator_flip_equals_cpu_flip():
    """The test-time flip on the (simulated) GPU: the mirror kernel after the render gives the
    CPU kernels' flip bit for bit, for every output dtype, through render_into and the front
    door."""
    res = run_simulated(CASES + r"""
from heatvol.render.volume import mirror_channels
rng = np.random.default_rng(17)
out = {}
for mode in ("joint", "limb"):
    limbs = None if mode == "joint" else LIMBS
    C = K if mode == "joint" else len(LAY.limbs)
    mirror = mirror_channels(LAY, mode)
    kp, sc = case(rng, 2, 3, 2, 6, 7)
    for dtype in (np.float32, np.float16, np.uint8):
        want = np.empty((4, C, 2, 6, 7), dtype)
        cpu.render_into(kp, sc, limbs, want, 0.7, True, mirror_channel=mirror)
        got = np.zeros(want.shape, dtype)
        kc.render_into(kp, sc, limbs, got, 0.7, True, allow_simulator=True,
                       mirror_channel=mirror)
        front = heatvol.render_batch(kp, sc, size=(6, 7), sigma=0.7, mode=mode, dtype=dtype,
                                     flip=True, render_device="cuda-simulator")
        out[f"{mode}_{np.dtype(dtype).name}"] = [bool(np.array_equal(got, want)),
                                                 bool(np.array_equal(front, want))]
print(json.dumps(out))
""")
    assert res == {f"{m}_{d}": [True, True] for m in ("joint", "limb")
                   for d in ("float32", "float16", "uint8")}
