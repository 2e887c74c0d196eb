"""What the volume dtype handed to the model costs in accuracy: one checkpoint evaluated on the
same test split with volumes rendered in float32, float16 and uint8 (issue 17, item 3).

    python benchmarks/volume_dtype_accuracy.py --poses /tmp/penn.h5 --checkpoint runs/x/best.pt

Prints top-1 per dtype, how many predictions change against float32, and the largest
difference of a class probability. Volumes are rendered on the CPU (``render_device cpu``);
the model runs where ``--device`` says (float16/uint8 volumes become float32 there).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heatvol.training.predict import evaluate_checkpoint


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--split", default=None)
    ap.add_argument("--num-clips", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"Machine: {platform.processor() or platform.machine()}; checkpoint {args.checkpoint}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16", "uint8"):
            t = time.perf_counter()
            res = evaluate_checkpoint(
                args.poses, args.checkpoint, split=args.split, num_clips=args.num_clips,
                device=args.device, render_device="cpu", workers=args.workers,
                confusion_png=Path(tmp) / f"{dtype}.png", volume_dtype=dtype)
            res["probs"] = np.asarray(res["scores"])
            res["seconds"] = time.perf_counter() - t
            results[dtype] = res
    base = results["float32"]
    print("\n| volumes | top-1 | predictions changed vs float32 | max |Δ probability| | s |")
    print("| --- | --- | --- | --- | --- |")
    for dtype, res in results.items():
        changed = int((res["probs"].argmax(1) != base["probs"].argmax(1)).sum())
        delta = float(np.abs(res["probs"] - base["probs"]).max())
        print(f"| {dtype} | {res['top1'] * 100:.2f}% | {changed} / {len(res['probs'])} | "
              f"{delta:.2e} | {res['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
