"""Training throughput: samples/s and the fraction of step time spent waiting for data,
with volumes rendered in the DataLoader workers (``--render-device cpu``) or inside the step
on the GPU (``--render-device cuda``).

It runs the real training loop (:func:`heatvol.training.train`) for ``--warmup + --steps``
optimiser steps on a pose store and reports the steps after the warm-up; nothing is
validated or kept (a temporary work dir).

    python benchmarks/train_throughput.py penn.h5 --model slowonly --size 56 --clip-len 48 \
        --batch-size 16 --workers 4 --steps 30
    python benchmarks/train_throughput.py penn.h5 --preset penn-x3d-cpu --render-device cpu \
        --steps 10

Without a CUDA GPU, ``--render-device cuda`` is reported as not run ("no GPU") and the cpu
mode runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import numpy as np
import torch


def run(args, render_device: str) -> dict:
    from heatvol.training import ConfigError, TrainConfig, train
    from heatvol.presets import load_preset

    settings = load_preset(args.preset) if args.preset else {}
    settings.pop("render", None)  # a user preset's former name of render_device
    settings.update({k: v for k, v in {
        "model": args.model, "size": args.size, "clip_len": args.clip_len,
        "batch_size": args.batch_size, "workers": args.workers, "mode": "limb" if args.limb
        else None}.items() if v is not None})
    if args.model_kwargs:
        settings["model_kwargs"] = json.loads(args.model_kwargs)
    settings.update(poses=args.poses, render_device=render_device, device=args.device,
                    val_split=None,
                    progress=False, max_steps=args.warmup + args.steps, epochs=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        settings["work_dir"] = tmp
        cfg = TrainConfig.from_dict(settings)
        if render_device == "cuda" and not torch.cuda.is_available():
            return {"render_device": render_device, "skipped": "no GPU: "
                    "torch.cuda.is_available() is False (--render-device cuda renders inside "
                    "the step on a CUDA device)"}
        try:
            res = train(cfg)
        except ConfigError as exc:
            return {"render_device": render_device, "skipped": " ".join(str(exc).split())}
    timings = np.array(res["timings"][args.warmup:])
    if not len(timings):
        return {"render_device": render_device, "skipped": "no steps measured"}
    data, step = timings[:, 0].sum(), timings[:, 1].sum()
    samples = len(timings) * cfg.batch_size * res["world_size"]
    return {"render_device": render_device, "device": res["device"], "model": cfg.model,
            "mode": cfg.mode, "size": list(cfg.size), "clip_len": cfg.clip_len,
            "batch_size": cfg.batch_size,
            "workers": cfg.workers, "steps": len(timings),
            "samples_per_s": samples / step, "step_ms": 1000 * step / len(timings),
            "data_wait_fraction": data / step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("poses", help="pose store (2D)")
    p.add_argument("--preset", default=None, help="start from a preset (`heatvol presets`)")
    p.add_argument("--model", default=None, help="slowonly | c3d | x3d [default: x3d]")
    p.add_argument("--model-kwargs", default=None, help='JSON, e.g. \'{"base_channels": 16}\'')
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="H [W]")
    p.add_argument("--clip-len", type=int, default=None)
    p.add_argument("--limb", action="store_true")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--render-device", nargs="+", default=None, choices=["cpu", "cuda"],
                   help="where volumes are rendered, each in turn [default: cpu cuda]")
    p.add_argument("--render", nargs="+", default=None, choices=["cpu", "gpu"],
                   help=argparse.SUPPRESS)  # the former name (gpu = cuda), one release
    p.add_argument("--steps", type=int, default=20, help="measured steps")
    p.add_argument("--warmup", type=int, default=3, help="steps not measured")
    p.add_argument("--json", action="store_true", help="print JSON lines only")
    args = p.parse_args(argv)
    if args.render is not None:
        print("train_throughput.py: warning: --render is deprecated; use --render-device "
              "(gpu is cuda)", file=sys.stderr)
        args.render_device = args.render_device or ["cuda" if r == "gpu" else r
                                                    for r in args.render]
    args.render_device = args.render_device or ["cpu", "cuda"]
    if args.preset is None:
        args.model = args.model or "x3d"
        args.size = args.size or 56
        args.clip_len = args.clip_len or 48
        args.batch_size = args.batch_size or 16
        args.workers = 2 if args.workers is None else args.workers

    if not args.json:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        print(f"# {platform.node()}: {torch.get_num_threads()} torch threads, GPU: {gpu}, "
              f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for render_device in args.render_device:
        res = run(args, render_device)
        if args.json:
            print(json.dumps(res))
        elif "skipped" in res:
            print(f"--render-device {render_device}: not run ({res['skipped']})")
        else:
            height, width = res["size"]
            print(f"--render-device {render_device}: {res['model']} {res['mode']} {height}x{width}"
                  f"x{res['clip_len']} batch {res['batch_size']}, {res['workers']} workers on "
                  f"{res['device']}: {res['samples_per_s']:.1f} samples/s, {res['step_ms']:.0f} "
                  f"ms/step, waiting for data {res['data_wait_fraction']:.1%} of the step time "
                  f"({res['steps']} steps)")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
