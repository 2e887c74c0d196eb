"""heatvol's CPU data path against pyskl's own pipeline classes, per sample, in one run (issue 17).

    python benchmarks/pipeline_vs_pyskl.py --poses /tmp/penn.h5             # the table
    python benchmarks/pipeline_vs_pyskl.py --poses /tmp/penn.h5 --render    # + heatvol render

``--poses``: Penn Action imported with ``heatvol import penn-action
/work/shared/data/penn_action --out /tmp/penn.h5``. pyskl's classes come from
``../shared/reference/pyskl_pipeline.py`` (``--pyskl`` to point elsewhere); without it the pyskl
columns are skipped with the reason printed.

Part 1, per sample, single thread (Numba 1 thread, torch 1 thread), on the same Penn Action
test samples, in two interleavings, each a table (per sample the fastest of ``--rounds``
rounds, then the mean over samples; the method order rotates per round):

- back to back: each method runs over all samples before the next takes over, which is what
  a DataLoader worker does (one pipeline, item after item, its code and data in cache);
- round-robin: per sample every method in turn, so each call starts with the caches pyskl's
  milliseconds of NumPy left. A sub-millisecond item pays ~0.3 ms for that here (measured:
  0.21 ms back to back, 0.64 ms after 5 ms of a Python busy loop), pyskl's few per cent.


- train joint / limb, 48 frames, 56^2: pyskl UniformSampleFrames(48) -> PoseDecode ->
  PoseCompact(hw_ratio 1, allow_imgpad) -> Resize(-1, 64) -> RandomResizedCrop(0.56-1) ->
  Resize(56, 56) -> Flip(0.5) -> GeneratePoseTarget -> FormatShape, on a deep copy of the
  sample's dict (what pyskl's dataset does); heatvol ``PoseDataset(train=True)[epoch, i]``
  (store read from memory, pipeline, render).
- test 10 clips x flip, 64^2, joint: pyskl UniformSampleFrames(48, 10, test_mode) -> ... ->
  Resize(64, 64) -> GeneratePoseTarget(double=True); heatvol ``PoseDataset(train=False,
  num_clips=10, flip=True)`` (the kernels' flip) and, to split the time, the same without flip
  and the former flip (``np.concatenate([v, flip_volume(v)])``) on its output.
- every heatvol row in float32 and float16 (``PoseDataset(volume_dtype=...)``, item 3).
- floors: writing a fresh output of the row's shape once (``np.empty(shape).fill(0)``, page
  faults included) in float32, float16 and uint8.

Part 2 (``--render``): ``heatvol render POSES --split test --limb --size 56`` end to end, the
baseline tree (``--baseline`` git revision, extracted with ``git archive``; default the commit
before issue 17) with ``--workers 1`` and this tree with ``--workers 1`` and ``2``, interleaved,
each writing a fresh float32 file; plus this tree's render-only floor (pipeline + kernels, no
compression or file) in one process.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BLOSC_NTHREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYSKL = ROOT.parent / "shared" / "reference" / "pyskl_pipeline.py"
BASELINE = "3caca5d"  # main before issue 17 (kernel flip, codec)


def uptime() -> str:
    try:
        return "load " + ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load ?"


def load_pyskl(path: Path):
    if not path.is_file():
        return None, f"pyskl reference not found at {path} (pass --pyskl): pyskl columns skipped"
    spec = importlib.util.spec_from_file_location("pyskl_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - report why and go on without it
        return None, f"pyskl reference at {path} failed to import ({type(exc).__name__}: {exc})"
    return module, None


def pyskl_pipelines(ps, lay, clip_len=48):
    perm = lay.flip_index()
    left_kp = [i for i, p in enumerate(perm) if p > i]
    right_kp = [perm[i] for i in left_kp]
    lperm = lay.limb_flip_index()
    left_limb = [i for i, p in enumerate(lperm) if p > i]
    right_limb = [lperm[i] for i in left_limb]
    skeletons = [tuple(limb) for limb in lay.limbs]

    def target(limb, double=False):
        return ps.GeneratePoseTarget(sigma=0.6, use_score=True, with_kp=not limb, with_limb=limb,
                                     skeletons=skeletons, double=double, left_kp=left_kp,
                                     right_kp=right_kp, left_limb=left_limb,
                                     right_limb=right_limb)

    def train(limb):
        return ps.Compose([
            ps.UniformSampleFrames(clip_len=clip_len), ps.PoseDecode(),
            ps.PoseCompact(hw_ratio=1., allow_imgpad=True), ps.Resize(scale=(-1, 64)),
            ps.RandomResizedCrop(area_range=(0.56, 1.0)),
            ps.Resize(scale=(56, 56), keep_ratio=False),
            ps.Flip(flip_ratio=0.5, left_kp=left_kp, right_kp=right_kp), target(limb),
            ps.FormatShape(input_format="NCTHW_Heatmap")])

    test = ps.Compose([
        ps.UniformSampleFrames(clip_len=clip_len, num_clips=10), ps.PoseDecode(),
        ps.PoseCompact(hw_ratio=1., allow_imgpad=True), ps.Resize(scale=(64, 64), keep_ratio=False),
        target(False, double=True), ps.FormatShape(input_format="NCTHW_Heatmap")])
    return {"train joint": train(False), "train limb": train(True), "test": test}


def pyskl_record(rec, test: bool) -> dict:
    kp = np.asarray(rec.keypoints[..., :2], np.float32)
    return {"keypoint": kp, "keypoint_score": np.asarray(rec.scores, np.float32),
            "img_shape": tuple(int(v) for v in rec.img_shape), "original_shape":
            tuple(int(v) for v in rec.img_shape), "total_frames": kp.shape[1],
            "label": int(rec.label), "modality": "Pose", "start_index": 0, "test_mode": test}


def interleaved(methods: dict, samples: list, rounds: int, blocks: bool) -> dict:
    """{name: mean over samples of the fastest of ``rounds`` timings (seconds)}.

    ``blocks=False``: per sample, every method in turn (round-robin), so each call starts
    with caches the other methods left (cold). ``blocks=True``: each method runs over all
    samples back to back before the next method takes over (what a DataLoader worker does:
    one pipeline, item after item). The method order rotates per round in both.
    """
    names = list(methods)
    best = {n: [float("inf")] * len(samples) for n in names}

    def timed(n, i, s):
        t = time.perf_counter()
        methods[n](s)
        best[n][i] = min(best[n][i], time.perf_counter() - t)

    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if blocks:
            for n in order:
                for i, s in enumerate(samples):
                    timed(n, i, s)
        else:
            for i, s in enumerate(samples):
                for n in order:
                    timed(n, i, s)
    return {n: statistics.fmean(v) for n, v in best.items()}


TARGETS = {"train joint": 15, "train limb": 35, "test": 8}
LABELS = {"train joint": "train, joint, 48 frames, 56²", "train limb": "train, limb, 56²",
          "test": "test, 10 clips × flip, 64², joint"}


def table(rows: list, title: str) -> list[str]:
    lines = ["", title, "",
             "| per sample (ms) | pyskl | heatvol float32 | ratio | heatvol float16 | ratio | "
             "target | float32 write floor | pyskl / float32 floor | float16 / uint8 floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, t in rows:
        py = t.get("pyskl")

        def ratio(key):
            return f"{py / t[key]:.1f}×" if py else "-"

        lines.append(
            f"| {LABELS[row]} | {f'{py * 1e3:.1f}' if py else 'skipped'} | "
            f"{t['heatvol'] * 1e3:.2f} | {ratio('heatvol')} | "
            f"{t['heatvol float16'] * 1e3:.2f} | {ratio('heatvol float16')} | "
            f"≥ {TARGETS[row]}× | {t['floor float32'] * 1e3:.2f} | "
            f"{ratio('floor float32')} | "
            f"{t['floor float16'] * 1e3:.2f} / {t['floor uint8'] * 1e3:.2f} |")
    return lines


def part1(args) -> list[str]:
    import numba
    import torch

    from heatvol.data import PoseDataset
    from heatvol.store import PoseStore
    from heatvol.transforms import flip_volume

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    store = PoseStore(args.poses, in_memory=True)
    lay = store.layout
    names = store.split("test")[:: max(1, len(store.split("test")) // args.samples)][:args.samples]
    idx = list(range(len(names)))
    ps, why = load_pyskl(Path(args.pyskl))
    common = dict(clip_len=48, max_persons=2, render_device="cpu")
    ds = {}
    for dtype in ("float32", "float16"):
        ds["train joint", dtype] = PoseDataset(store, names, train=True, size=56, mode="joint",
                                               volume_dtype=dtype, **common)
        ds["train limb", dtype] = PoseDataset(store, names, train=True, size=56, mode="limb",
                                              volume_dtype=dtype, **common)
        for flip in (True, False):
            ds["test" if flip else "test no flip", dtype] = PoseDataset(
                store, names, train=False, size=64, mode="joint", num_clips=10, flip=flip,
                volume_dtype=dtype, **common)
    for d in ds.values():  # warm-up: compile / load Numba caches
        d[(1, 0)]
    records = {i: store[n] for i, n in enumerate(names)}
    pipes = pyskl_pipelines(ps, lay) if ps is not None else {}
    shapes = {"train joint": (lay.num_joints, 48, 56, 56),
              "train limb": (len(lay.limbs), 48, 56, 56),
              "test": (20, lay.num_joints, 48, 64, 64)}
    plain = {i: ds["test no flip", "float32"][i]["volume"] for i in idx}
    lines = [f"Part 1: {len(names)} Penn Action test samples, {args.rounds} rounds, single "
             f"thread; before: {uptime()}"]
    results = {}
    for blocks in (True, False):
        rows = []
        for row in ("train joint", "train limb", "test"):
            methods = {"heatvol": (lambda i, d=ds[row, "float32"]: d[(1, i)]),
                       "heatvol float16": (lambda i, d=ds[row, "float16"]: d[(1, i)])}
            if row == "test":
                for dtype in ("float32", "float16"):
                    methods[f"no flip {dtype}"] = (
                        lambda i, d=ds["test no flip", dtype]: d[i])
                methods["former flip"] = lambda i: np.concatenate(
                    [plain[i], flip_volume(plain[i], lay, "joint")])
            if ps is not None:
                base = {i: pyskl_record(records[i], row == "test") for i in idx}
                methods["pyskl"] = lambda i, p=pipes[row], b=base: p(copy.deepcopy(b[i]))
                np.random.seed(0)
            for dt in ("float32", "float16", "uint8"):
                methods[f"floor {dt}"] = lambda i, s=shapes[row], d=dt: np.empty(s, d).fill(0)
            rows.append((row, interleaved(methods, idx, args.rounds, blocks)))
        results[blocks] = dict(rows)
        lines += table(rows, "Each method over all samples back to back (what a DataLoader "
                             "worker does), rounds interleaved:" if blocks else
                             "Per sample, every method in turn (round-robin: each call starts "
                             "with the caches the other methods left):")
    lines.append(f"after: {uptime()}")
    if why:
        lines.append(why)
    for blocks, label in ((True, "back to back"), (False, "round-robin")):
        test = results[blocks]["test"]
        lines.append("")
        for dtype, key in (("float32", "heatvol"), ("float16", "heatvol float16")):
            render = test[f"no flip {dtype}"]
            flip = test[key] - render
            lines.append(f"`heatvol test` item, {label}, {dtype} (10 clips, 64², joint): "
                         f"without flip {render * 1e3:.1f} ms, with the kernels' flip "
                         f"{test[key] * 1e3:.1f} ms: flip {flip * 1e3:.1f} ms "
                         f"({'less' if flip < render else 'not less'} than rendering).")
        lines.append(f"The former flip (np.concatenate + flip_volume on the float32 item): "
                     f"{test['former flip'] * 1e3:.1f} ms on top of the item without flip.")
    return lines


def run_render(tree: Path, poses: str, out: Path, workers: int, dtype: str = "float32") -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", "from heatvol.cli import main; main()", "render", poses,
           "--out", str(out), "--split", "test", "--limb", "--size", "56", "--workers",
           str(workers), "--dtype", dtype, "--overwrite", "--quiet"]
    t = time.perf_counter()
    # cwd outside the repository: `python -c` puts the cwd first on sys.path, which would
    # shadow PYTHONPATH (the baseline tree) with the checkout's heatvol
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"render failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return wall


def part2(args) -> list[str]:
    from heatvol.render.pipeline import sample_volume
    from heatvol.store import PoseStore
    from heatvol.transforms import test_pipeline
    from heatvol.volumes import VolumeFile

    tmp = Path(tempfile.mkdtemp(prefix="heatvol-render-bench-"))
    try:
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "heatvol"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        store = PoseStore(args.poses)
        n = len(store.split("test"))
        configs = [("baseline (deflate), --workers 1", base, 1, "float32"),
                   ("now, --workers 1", ROOT, 1, "float32"),
                   ("now, --workers 2", ROOT, 2, "float32")]
        if args.float16:
            configs.append(("now, --workers 2 --dtype float16", ROOT, 2, "float16"))
        walls = {c[0]: [] for c in configs}
        loads = []
        for r in range(args.render_rounds):
            for k, (label, tree, workers, dtype) in enumerate(configs):
                loads.append(uptime())
                out = tmp / f"config{k}.h5"
                walls[label].append(run_render(tree, args.poses, out, workers, dtype))
        sizes = {c[0]: (tmp / f"config{k}.h5").stat().st_size for k, c in enumerate(configs)}
        with VolumeFile(tmp / "config0.h5") as a, VolumeFile(tmp / "config2.h5") as b:
            equal = a.names() == b.names() and all(
                np.array_equal(a[i].view(np.uint8), b[i].view(np.uint8)) for i in range(len(a)))
        # render-only floor in one process (pipeline + kernels, 2 Numba threads), no file
        pipe = test_pipeline(48, 1, (56, 56))
        kw = dict(size=(56, 56), sigma=0.6, mode="limb", layout=store.layout, dtype="float32",
                  render_device="cpu")
        recs = [store[name] for name in store.split("test")]
        t = time.perf_counter()
        for rec in recs:
            sample_volume(rec, pipeline=pipe, num_clips=1, render_kwargs=kw)
        render_only = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base_best = min(walls[configs[0][0]])
    lines = [f"Part 2: `heatvol render {Path(args.poses).name} --split test --limb --size 56` "
             f"({n} samples), {args.render_rounds} interleaved round(s); loads before each run: "
             f"{'; '.join(loads)}", "",
             "| command | wall (best) | samples/s | vs baseline | file |",
             "| --- | --- | --- | --- | --- |"]
    for label, *_ in configs:
        w = min(walls[label])
        lines.append(f"| {label} | {w:.1f} s | {n / w:.0f} | {base_best / w:.2f}× | "
                     f"{sizes[label] / 1e6:.0f} MB |")
    lines.append(f"| floor: test pipeline + render only, one process, no file | "
                 f"{render_only:.1f} s | {n / render_only:.0f} | {base_best / render_only:.2f}× | - |")
    lines += ["", f"Decompressed volumes of the baseline file and this tree's --workers 2 file "
              f"byte-equal: {equal}."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", required=True, help="Penn Action pose store (heatvol import)")
    ap.add_argument("--pyskl", default=str(DEFAULT_PYSKL))
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--render", action="store_true", help="also part 2 (heatvol render)")
    ap.add_argument("--render-only", action="store_true", help="only part 2")
    ap.add_argument("--render-rounds", type=int, default=1)
    ap.add_argument("--float16", action="store_true", help="part 2: also --dtype float16")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the baseline render")
    args = ap.parse_args(argv)
    if not Path(args.poses).is_file():
        print(f"{args.poses}: no such pose store (heatvol import penn-action ... --out it)")
        return 2
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
          f"cores; Python {platform.python_version()}, NumPy {np.__version__}")
    lines = [] if args.render_only else part1(args)
    if args.render or args.render_only:
        lines += [""] + part2(args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
