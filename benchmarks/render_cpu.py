"""CPU rendering benchmark: reference vs Numba (1 thread, all threads) vs the memory floor.

    python benchmarks/render_cpu.py            # full run, writes docs/benchmarks.md's section
    python benchmarks/render_cpu.py --quick    # fewer repeats, smaller grid, prints only

Per configuration (mode joint/limb, M persons, size S x S; T=48, K=17 coco17, sigma=0.6):
ms per sample, median over repeats after a warm-up, for

- reference: heatvol.kernels.reference (pyskl's loops in NumPy),
- numba 1t / numba Nt: render_batch(..., out=preallocated) with 1 / all Numba threads,
- floor: ``out[...] = 0`` on the same preallocated output, i.e. writing it once,
- fresh: render_batch without ``out`` (allocates, page faults included) vs
  ``np.zeros(shape) + fill`` for the same allocation cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

import heatvol
from heatvol.kernels import cpu as cpu_kernels
from heatvol.kernels.reference import render_joints_reference, render_limbs_reference

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## CPU rendering (benchmarks/render_cpu.py)"

# A standing person facing the camera, COCO-17 order, x right / y down, height ~1.
_TEMPLATE = np.array([
    (0.00, 0.05), (0.03, 0.03), (-0.03, 0.03), (0.06, 0.05), (-0.06, 0.05),
    (0.12, 0.18), (-0.12, 0.18), (0.16, 0.35), (-0.16, 0.35), (0.17, 0.50), (-0.17, 0.50),
    (0.08, 0.52), (-0.08, 0.52), (0.09, 0.74), (-0.09, 0.74), (0.09, 0.95), (-0.09, 0.95),
], np.float32)
_SWINGING = np.array([7, 8, 9, 10, 13, 14, 15, 16])  # elbows, wrists, knees, ankles


def realistic_poses(rng: np.random.Generator, batch: int, persons: int, frames: int, size: int,
                    missing_rate: float = 0.05):
    """Random but plausible poses: keypoints float32 [B, M, T, 17, 2], scores float32 [B, M, T, 17].

    Each person is a template skeleton 50-90 % of the frame height, placed inside the frame,
    drifting slowly, limbs swinging, 0.5 px jitter; scores in [0.3, 1], ``missing_rate`` of the
    joints with score 0.
    """
    kps = np.empty((batch, persons, frames, 17, 2), np.float32)
    t = np.arange(frames, dtype=np.float32)[:, None]
    for b in range(batch):
        for m in range(persons):
            height = rng.uniform(0.5, 0.9) * size
            origin = np.array([rng.uniform(0.2, 0.8) * size, rng.uniform(0.02, 0.1) * size], np.float32)
            drift = rng.normal(0, 0.15, 2).astype(np.float32)
            phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.4)
            pose = _TEMPLATE[None] * height + origin + drift * t[..., None]   # [T, 17, 2]
            swing = np.sin(speed * t + phase) * 0.08 * height                   # [T, 1]
            pose[:, _SWINGING, 0] += swing
            pose += rng.normal(0, 0.5, pose.shape).astype(np.float32)
            kps[b, m] = pose
    scores = rng.uniform(0.3, 1.0, kps.shape[:-1]).astype(np.float32)
    scores[rng.random(scores.shape) < missing_rate] = 0
    return kps, scores


def _median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _interleaved_median_ms(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median ms of each function, timed round-robin so that all of them see the same machine
    load (this box is shared: timing one after the other skews ratios)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def machine_description() -> str:
    model = "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} logical cores (Numba threads: {numba.config.NUMBA_NUM_THREADS}, "
            f"layer {numba.threading_layer()}); Python {platform.python_version()}, "
            f"NumPy {np.__version__}, Numba {numba.__version__}")


def run(quick: bool):
    rng = np.random.default_rng(2024)
    frames, sigma = 48, 0.6
    sizes = (56,) if quick else (56, 64)
    person_counts = (1, 2)
    samples = 2 if quick else 8           # batch per Numba call (per-sample time reported)
    repeats = 5 if quick else 21
    ref_repeats = 1 if quick else 11
    limbs = heatvol.layout("coco17").limbs
    all_threads = numba.config.NUMBA_NUM_THREADS
    rows = []
    for mode in ("joint", "limb"):
        for persons in person_counts:
            for size in sizes:
                kps, scores = realistic_poses(rng, samples, persons, frames, size)
                kwargs = dict(size=size, sigma=sigma, mode=mode)
                channels = len(limbs) if mode == "limb" else 17
                limb_array = np.asarray(limbs, np.int64) if mode == "limb" else None
                out = np.empty((samples, channels, frames, size, size), np.float32)

                def numba_prealloc():
                    heatvol.render_batch(kps, scores, out=out, **kwargs)

                # Fresh-output variants, one sample per call as a data-loader worker would.
                one_kps, one_scores = kps[:1].copy(), scores[:1].copy()

                def numba_fresh():
                    heatvol.render_batch(one_kps, one_scores, **kwargs)  # np.empty + kernel fill

                def numba_fresh_zeros():
                    # the alternative design: np.zeros, then kernels that skip their own fill
                    fresh = np.zeros((1,) + out.shape[1:], np.float32)
                    cpu_kernels.render_into(one_kps, one_scores, limb_array, fresh, sigma, True,
                                            planes_are_zero=True)

                def floor_fresh():
                    np.zeros((1,) + out.shape[1:], np.float32).fill(0)

                def floor_prealloc():
                    out[...] = 0

                if mode == "joint":
                    def reference():
                        render_joints_reference(kps[0], scores[0], size, sigma)
                else:
                    def reference():
                        render_limbs_reference(kps[0], scores[0], limbs, size, sigma)

                numba.set_num_threads(1)
                single = _interleaved_median_ms(
                    dict(t1=numba_prealloc, floor=floor_prealloc, t1_fresh=numba_fresh,
                         t1_zeros=numba_fresh_zeros, floor_fresh=floor_fresh), repeats)
                numba.set_num_threads(all_threads)
                multi = _interleaved_median_ms(dict(tn=numba_prealloc, floor=floor_prealloc), repeats)
                t1, floor = single["t1"] / samples, single["floor"] / samples
                t1_fresh, t1_zeros = single["t1_fresh"], single["t1_zeros"]  # one sample each
                floor_f = single["floor_fresh"]
                tn = multi["tn"] / samples
                ref = _median_ms(reference, ref_repeats, warmup=1)
                rows.append(dict(mode=mode, M=persons, size=size, ref=ref, t1=t1, tn=tn, floor=floor,
                                 t1_fresh=t1_fresh, t1_zeros=t1_zeros, floor_fresh=floor_f))
                print(f"{mode:5s} M={persons} {size}x{size}: ref {ref:7.2f}  1t {t1:6.3f}  "
                      f"{all_threads}t {tn:6.3f}  floor {floor:6.3f} ms", file=sys.stderr)
    return rows


def format_table(rows, quick: bool) -> str:
    threads = numba.config.NUMBA_NUM_THREADS
    lines = [
        f"| mode | M | size | reference | numba 1t | numba {threads}t | floor | ref / 1t | 1t / floor "
        f"| fresh: np.empty + kernel fill (1t) | fresh: np.zeros + kernel (1t) | fresh floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['M']} | {r['size']}x{r['size']} | {r['ref']:.2f} | {r['t1']:.3f} | "
            f"{r['tn']:.3f} | {r['floor']:.3f} | {r['ref'] / r['t1']:.0f}x | {r['t1'] / r['floor']:.2f}x "
            f"| {r['t1_fresh']:.3f} | {r['t1_zeros']:.3f} | {r['floor_fresh']:.3f} |")
    return "\n".join(lines)


def write_section(text: str, path: Path = ROOT / "docs" / "benchmarks.md"):
    """Replace (or append) this benchmark's section of docs/benchmarks.md, leaving others alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    start = existing.find(SECTION)
    if start < 0:
        updated = existing.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = existing.find("\n## ", start + len(SECTION))
        tail = existing[nxt:] if nxt >= 0 else "\n"
        updated = existing[:start] + text.rstrip("\n") + "\n" + tail
    path.write_text(updated)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and configurations; "
                        "print only, do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    table = format_table(rows, args.quick)
    print(table)
    if not args.quick:
        body = (f"{SECTION}\n\n"
                f"Machine: {machine_description()}.\n\n"
                f"ms per sample (T=48, K=17 coco17, sigma=0.6, float32 output; realistic poses: a "
                f"person 50-90 % of the frame height, 5 % missing joints), median of repeated runs "
                f"after warm-up, Numba timed on batches of 8 samples. `reference` = "
                f"heatvol.kernels.reference (pyskl's loops). `floor` = `out[...] = 0` on the same "
                f"preallocated output (writing the output once); numba columns render into that "
                f"preallocated output (`render_batch(..., out=out)`). `fresh` columns render one sample "
                f"per call into a newly allocated output, as a data-loader worker would (allocation "
                f"and page faults included): render_batch without `out` (np.empty; the kernel "
                f"zero-fills each plane while rendering it), the alternative design (np.zeros, "
                f"then kernels that skip their own fill) and the fresh floor "
                f"`np.zeros(shape).fill(0)`. Numba and floor timings are interleaved "
                f"(round-robin) so ratios see the same load; this 2-core box is shared with other "
                f"jobs, and repeated runs of this script differ by up to ~20-30 % (the reference "
                f"column the most).\n\n{table}\n")
        write_section(body)


if __name__ == "__main__":
    main()
