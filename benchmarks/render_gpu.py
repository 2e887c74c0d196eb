"""CPU vs GPU rendering benchmark (needs a CUDA GPU with numba-cuda; CuPy or torch for the fill).

    pip install -e ".[gpu]"                     # cupy-cuda12x + numba-cuda (see docs/gpu.md)
    python benchmarks/render_gpu.py             # full grid: B = 1..256, joint/limb, 56/64 px
    python benchmarks/render_gpu.py --quick     # B in {1, 32}, fewer repeats
    python benchmarks/render_gpu.py --threads 64 128 256   # compare block sizes

Per (mode, size, B), T=48, M=2, K=17 coco17, sigma=0.6, float32 output, realistic poses
(benchmarks/render_cpu.py's generator):

- cpu samples/s: render_batch(render_device="cpu") into a preallocated output, all Numba threads;
- gpu samples/s: the CUDA kernel alone, inputs and output already on the device, timed with
  CUDA events over repeats (median);
- ratio gpu / cpu;
- floor: bytes written / device write bandwidth, the bandwidth measured in the same run by a
  fill of an equal buffer (cupy ``fill(0)`` or torch ``fill_(0)``); gpu/floor is how close the
  kernel is to writing its output once at full speed (the issue's target: <= 1.5 at B >= 32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B in {1, 32}, fewer repeats")
    parser.add_argument("--threads", type=int, nargs="+", default=[128],
                        help="CUDA threads per block to compare (default 128)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON line for the device and one per row, as "
                             "each is measured (benchmarks/gpu_acceptance.py reads them)")
    parser.add_argument("--simulator", action="store_true",
                        help="run under Numba's CUDA simulator with tiny shapes (B = 1, T = 1, "
                             "6x6, 8 threads/block, wall-clock timing): checks this script "
                             "end to end without a GPU; the figures mean nothing")
    args = parser.parse_args()
    if args.simulator:
        # Numba reads the variable once, when first imported: nothing has imported it yet
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

    from heatvol.kernels import cuda as kernels

    if not args.simulator and not kernels.is_available():
        print("render_gpu.py: no usable CUDA GPU (numba.cuda.is_available() is False, or only "
              "the simulator is enabled); nothing to measure. Run on a GPU machine after "
              "`pip install -e \".[gpu]\"`.", file=sys.stderr)
        return 2
    import numba
    from numba import cuda

    import heatvol
    from heatvol.kernels import cpu
    from render_cpu import realistic_poses

    fill = _fill_function(args.simulator)
    if args.simulator:  # the simulator has no device object
        name, cc = "Numba CUDA simulator (no GPU)", (0, 0)
    else:
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        cc = device.compute_capability
    cpu_threads = numba.get_num_threads()
    print(f"GPU: {name} (cc {cc}); CPU: {cpu_threads} Numba "
          f"threads; numba.cuda: {getattr(cuda, 'implementation', '?')}")
    if args.simulator:
        batches, sizes, frames, threads_list, repeats = [1], [6], 1, [8], 1
    else:
        batches = [1, 32] if args.quick else [2 ** i for i in range(9)]
        sizes, frames, threads_list = [56, 64], 48, args.threads
        repeats = args.repeats or (5 if args.quick else 20)
    if args.json:
        print(json.dumps({"kind": "device", "gpu": name,
                          "compute_capability": list(cc),
                          "cpu_numba_threads": cpu_threads, "cpu_count": os.cpu_count(),
                          "numba_cuda": str(getattr(cuda, "implementation", "?")),
                          "simulator": args.simulator, "frames": frames, "persons": 2,
                          "sigma": 0.6, "dtype": "float32", "repeats": repeats}), flush=True)
    timer = _wall_median if args.simulator else _gpu_median
    lay = heatvol.layout("coco17")
    limbs_all = np.array(lay.limbs, np.int64)
    rng = np.random.default_rng(0)
    rows, wrong = [], []
    for mode in ("joint", "limb"):
        for size in sizes:
            for batch in batches:
                kp, sc = realistic_poses(rng, batch, 2, frames, size)
                limbs = None if mode == "joint" else limbs_all
                channels = 17 if mode == "joint" else len(lay.limbs)
                shape = (batch, channels, frames, size, size)
                host_out = np.empty(shape, np.float32)
                cpu_s = _median(lambda: cpu.render_into(kp, sc, limbs, host_out, 0.6, True),
                                max(3, repeats // 4))
                d_kp, d_sc = cuda.to_device(kp), cuda.to_device(sc)
                d_limbs = cuda.to_device(limbs) if limbs is not None else None
                d_out = cuda.device_array(shape, np.float32)
                fill_s = timer(lambda: fill(d_out), repeats)
                for threads in threads_list:
                    gpu_s = timer(lambda: kernels.render_into(
                        d_kp, d_sc, d_limbs, d_out, 0.6, True, threads_per_block=threads,
                        allow_simulator=args.simulator), repeats)
                    # a wrong result is reported and the grid goes on (exit status 1 at the end):
                    # on a first run on hardware the timings of the other rows still matter
                    diff = float(np.abs(d_out.copy_to_host() - host_out).max())
                    if not diff <= 1e-6:
                        wrong.append((mode, size, batch, threads, diff))
                        print(f"GPU result differs from the CPU's: max abs {diff:.3g}",
                              flush=True)
                    nbytes = host_out.nbytes
                    rows.append((mode, size, batch, threads, batch / cpu_s, batch / gpu_s,
                                 cpu_s / gpu_s, nbytes / fill_s / 1e9, gpu_s / fill_s))
                    print(f"{mode:5} {size}x{size} B={batch:3} tpb={threads:4}: cpu "
                          f"{batch / cpu_s:9.1f}/s  gpu {batch / gpu_s:11.1f}/s  "
                          f"x{cpu_s / gpu_s:7.1f}  write {nbytes / fill_s / 1e9:6.0f} GB/s  "
                          f"gpu/floor {gpu_s / fill_s:5.2f}", flush=True)
                    if args.json:
                        print(json.dumps({
                            "kind": "row", "mode": mode, "size": size, "batch": batch,
                            "threads": threads, "cpu_samples_per_s": batch / cpu_s,
                            "gpu_samples_per_s": batch / gpu_s, "gpu_over_cpu": cpu_s / gpu_s,
                            "fill_gb_per_s": nbytes / fill_s / 1e9,
                            "gpu_over_floor": gpu_s / fill_s, "cpu_s": cpu_s, "gpu_s": gpu_s,
                            "fill_s": fill_s, "bytes": nbytes, "max_abs_vs_cpu": diff}),
                              flush=True)
    print()
    print("| mode | size | B | threads/block | CPU samples/s | GPU samples/s | GPU/CPU | fill GB/s "
          "| GPU time / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, size, batch, threads, c, g, ratio, bw, floor in rows:
        print(f"| {mode} | {size}x{size} | {batch} | {threads} | {c:.1f} | {g:.1f} | {ratio:.0f}x "
              f"| {bw:.0f} | {floor:.2f} |")
    if wrong:
        print(f"render_gpu.py: the GPU result differs from the CPU kernels' (> 1e-6) in "
              f"{len(wrong)} row(s), first {wrong[0]}", file=sys.stderr)
        return 1
    return 0


def _fill_function(simulator: bool = False):
    """Device fill of a numba device array at full write bandwidth (CuPy, else torch; under
    the simulator, a host-to-"device" copy, which only keeps the script running)."""
    if simulator:
        return lambda d: d.copy_to_device(np.zeros(d.shape, d.dtype))
    try:
        import cupy

        return lambda d: cupy.asarray(d).fill(0)
    except ImportError:
        import torch

        return lambda d: torch.as_tensor(d, device="cuda").fill_(0)


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _wall_median(fn, repeats: int) -> float:
    """Wall-clock median after a synchronize (the simulator's events record no time)."""
    from numba import cuda

    def synced():
        fn()
        cuda.synchronize()

    return _median(synced, repeats)


def _gpu_median(fn, repeats: int) -> float:
    """Median seconds of ``fn`` on the default stream, timed with CUDA events."""
    from numba import cuda

    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cuda.event_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
