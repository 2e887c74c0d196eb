"""GCN training throughput: forward + backward + SGD step, samples/s, on the CPU and the GPU.

    python benchmarks/gcn_throughput.py                         # all three GCNs, NW-UCLA shapes
    python benchmarks/gcn_throughput.py --setting ntu --batch-size 16 --steps 10
    python benchmarks/gcn_throughput.py --models msg3d --devices cuda --json gcn.json

Per model (``stgcn``, ``msg3d``, ``dualhead``, built with ``heatvol.models.build(name,
layout=..., num_classes=..., in_channels=3, num_person=M)``) and device, one training step is
``zero_grad -> forward -> cross-entropy -> backward -> SGD step`` (lr 0.1, momentum 0.9, Nesterov,
weight decay 5e-4) on a fixed batch of random normal coordinates ``[N, M, T, V, 3]`` (seeded)
that already sits on the device (no data loading, no host-to-device copy). DualHead-Net's loss is
its official ``(CE(fine) + CE(coarse)) / 2`` from ``model(x, return_heads=True)``; the others use
``CE(model(x))``. On CUDA the forward runs under bf16 autocast (as ``heatvol train`` does) and
``torch.cuda.synchronize()`` brackets every timed step. ``--warmup`` steps are run first and not
timed; the table gives the median over ``--steps`` timed steps (``time.perf_counter``) and
samples/s = batch / median step time.

Settings (``--setting``):

- ``ucla``: layout kinect20, T=32, M=1, 10 classes (NW-UCLA as the CPU presets train it);
- ``ntu``:  layout ntu25,    T=100, M=2, 60 classes (pyskl's clip_len 100);
- ``penn``: layout penn13,   T=32, M=1, 15 classes (Penn Action as the CPU presets).

``--frames`` overrides T (e.g. tiny smoke runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

GCN_NAMES = ("stgcn", "msg3d", "dualhead")

#: setting -> (layout, T, M, num_classes)
SETTINGS = {
    "ucla": ("kinect20", 32, 1, 10),
    "ntu": ("ntu25", 100, 2, 60),
    "penn": ("penn13", 32, 1, 15),
}


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_description() -> str:
    """CPU model and cores, torch version, GPU name (or none)."""
    model = platform.processor() or "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(),
                          re.MULTILINE)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{model}, {_cpu_cores()} cores (torch threads: {torch.get_num_threads()}); "
            f"torch {torch.__version__}; GPU: {gpu}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, device: str, *, layout: str, frames: int, persons: int, num_classes: int,
            batch_size: int, warmup: int, steps: int, seed: int = 0) -> dict:
    """Time ``warmup + steps`` training steps of GCN ``name`` on ``device``; one result row."""
    from heatvol.layouts import layout as get_layout
    from heatvol.models import build, count_parameters

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(seed)                              # same initial weights every run
    model = build(name, layout=layout, num_classes=num_classes, in_channels=3,
                  num_person=persons).to(dev).train()
    multi_head = getattr(model, "multi_head", False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    joints = get_layout(layout).num_joints
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, persons, frames, joints, 3, generator=gen).to(dev)
    y = torch.randint(num_classes, (batch_size,), generator=gen).to(dev)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(x, return_heads=True) if multi_head else model(x)
        if multi_head:
            fine, coarse = out
            loss = (F.cross_entropy(fine.float(), y) + F.cross_entropy(coarse.float(), y)) / 2
        else:
            loss = F.cross_entropy(out.float(), y)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(dev)
    times = []
    for _ in range(steps):
        _sync(dev)
        start = time.perf_counter()
        loss = step()
        _sync(dev)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "model": name, "params": count_parameters(model), "device": device,
        "device_detail": (f"cuda, bf16 autocast ({torch.cuda.get_device_name(dev)})" if cuda
                          else f"cpu, {_plural(torch.get_num_threads(), 'thread')}"),
        "layout": layout, "T": frames, "M": persons, "num_classes": num_classes,
        "batch_size": batch_size, "warmup": warmup, "steps": steps,
        "step_ms_median": 1e3 * median, "step_ms": [1e3 * t for t in times],
        "samples_per_s": batch_size / median, "final_loss": float(loss.detach()),
    }


def format_table(rows: list[dict]) -> str:
    header = ("| model | params | device | setting (layout, T, M) | batch | ms/step (median) "
              "| samples/s |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        device = "cpu" if r["device"] == "cpu" else "cuda (bf16)"
        lines.append(f"| {r['model']} | {r['params']:,} | {device} | {r['layout']}, T={r['T']}, "
                     f"M={r['M']} | {r['batch_size']} | {r['step_ms_median']:.1f} | "
                     f"{r['samples_per_s']:.1f} |")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="gcn_throughput.py", description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(GCN_NAMES), choices=GCN_NAMES,
                   metavar="MODEL", help=f"GCNs to measure: {' '.join(GCN_NAMES)} "
                   "[default: all three]")
    p.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                   metavar="DEVICE", help="cpu and/or cuda [default: cpu, plus cuda if "
                   "torch.cuda.is_available()]; cuda without a GPU is an error")
    p.add_argument("--setting", default="ucla", choices=list(SETTINGS),
                   help="input shape and classes: ucla = kinect20, T=32, M=1, 10 classes; "
                   "ntu = ntu25, T=100, M=2, 60 classes; penn = penn13, T=32, M=1, 15 classes "
                   "[default: ucla]")
    p.add_argument("--frames", type=_positive, default=None, metavar="T",
                   help="override the setting's T (frames per clip)")
    p.add_argument("--batch-size", type=_positive, default=16, help="samples per step [16]")
    p.add_argument("--warmup", type=_non_negative, default=2, help="untimed steps first [2]")
    p.add_argument("--steps", type=_positive, default=5, help="timed steps; the median is "
                   "reported [5]")
    p.add_argument("--threads", type=_positive, default=None,
                   help=f"torch.set_num_threads for the CPU [default: all cores, here "
                   f"{_cpu_cores()}]")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, inputs, labels [0]")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("gcn_throughput.py: error: --devices cuda asked for, but torch.cuda.is_available() "
              f"is False (torch {torch.__version__})", file=sys.stderr)
        return 2
    devices = list(dict.fromkeys(devices))
    models = list(dict.fromkeys(args.models))
    torch.set_num_threads(args.threads or _cpu_cores())
    layout, frames, persons, num_classes = SETTINGS[args.setting]
    frames = args.frames or frames

    print(f"# {machine_description()}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"# setting {args.setting}: {layout}, T={frames}, M={persons}, {num_classes} classes; "
          f"batch {args.batch_size}, {args.warmup} warm-up + {_plural(args.steps, 'timed step')} "
          f"(forward + backward + SGD step)")
    sys.stdout.flush()
    rows = []
    for device in devices:
        for name in models:
            row = measure(name, device, layout=layout, frames=frames, persons=persons,
                          num_classes=num_classes, batch_size=args.batch_size,
                          warmup=args.warmup, steps=args.steps, seed=args.seed)
            row["setting"] = args.setting
            rows.append(row)
            print(f"{name} on {row['device_detail']}: {row['step_ms_median']:.1f} ms/step, "
                  f"{row['samples_per_s']:.1f} samples/s", file=sys.stderr)
            if device == "cuda":
                torch.cuda.empty_cache()  # the model is gone; give its memory back
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine_description(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
