"""The pose store at Kinetics-400's shape, beside pyskl's annotation pickle of the same data.

Builds a synthetic dataset shaped like Kinetics-400's 2D skeletons (seeded; see
:func:`k400_like`): ``--sequences N`` sequences, COCO-17 keypoints with scores, 1-5 persons,
about 270 frames each. Writes it once as a heatvol pose store (``PoseWriter``) and once as
pyskl's pickle (``{"split": ..., "annotations": [...]}`` with ``keypoint`` float32
[M, T, 17, 2] and ``keypoint_score`` float32 [M, T, 17], ``pickle.dump`` protocol 2 as
``mmcv.dump``), then measures each in a fresh process (so memory figures start clean):

- store: write throughput, file size, open time, random single-sequence read latency (p50,
  p99) with a cold page cache (``posix_fadvise(POSIX_FADV_DONTNEED)`` on the store's file
  before every read; the HDF5 chunk cache is not emptied, but random sequences rarely share
  a chunk) and a warm one (the file read once first), a shuffled epoch of the ``train``
  split through ``PoseDataset`` (``render_device="cuda"``: keypoints only, the PoseC3D train
  pipeline, clip 48, batch 32) with 0 and ``--workers`` DataLoader workers.
- pickle: ``pickle.load`` time and memory, and the same epoch through a minimal torch
  Dataset over the loaded list (pyskl's ``BaseDataset``: ``copy.deepcopy`` of the list
  entry, then the same heatvol pipeline).

Memory: RSS, PSS and USS (private) from ``/proc/PID/smaps_rollup`` (Linux), of the main
process and of each worker, the largest value sampled every 10 batches and at the end of the
epoch. ``base`` is the process after importing torch and heatvol, before opening anything.

    python benchmarks/store_scale.py --sequences 2000 --dir /tmp/store_scale
    python benchmarks/store_scale.py --sequences 20000 --dir /tmp/store_scale --json r.json

The data files stay in ``--dir`` (reused by a later run with the same ``--sequences`` and
``--seed`` unless ``--rebuild``); ``--clean`` removes them at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

K400_CLASSES = 400
JOINTS = 17
# Frame rates of Kinetics-400 videos (most 30 fps, many 25, some 24 / 15) and the share of
# clips cut short by the end of their video: the mean length is ~268 frames, Kinetics-400's
# 70M frames / 260k clips.
FPS_CHOICES = np.array([30.0, 25.0, 24.0, 15.0])
FPS_P = np.array([0.70, 0.20, 0.05, 0.05])
SHORT_SHARE = 0.10
# Persons per clip: 1-5, mean ~2.1.
PERSONS_P = np.array([0.42, 0.27, 0.14, 0.10, 0.07])
IMG_SHAPES = np.array([[360, 640], [720, 1280], [480, 640], [240, 320], [1080, 1920]])
IMG_P = np.array([0.45, 0.25, 0.15, 0.10, 0.05])
# A rough COCO-17 standing pose (x, y) in units of person height, centred on the hips.
_POSE = np.array([[0, -.45], [-.03, -.48], [.03, -.48], [-.06, -.46], [.06, -.46],
                  [-.12, -.32], [.12, -.32], [-.16, -.15], [.16, -.15], [-.18, 0], [.18, 0],
                  [-.08, 0], [.08, 0], [-.09, .25], [.09, .25], [-.09, .48], [.09, .48]],
                 np.float32)


def k400_like(rng: np.random.Generator, i: int) -> dict:
    """One synthetic sequence shaped like a Kinetics-400 clip's 2D skeletons.

    Returns a pyskl annotation dict: frame_dir (a YouTube-id-like name), label (0-399),
    img_shape (H, W), total_frames T, keypoint float32 [M, T, 17, 2] (pixels: persons
    drifting smoothly with per-joint jitter), keypoint_score float32 [M, T, 17] (mostly high,
    ~8 % zeros as missing joints).
    """
    fps = float(rng.choice(FPS_CHOICES, p=FPS_P))
    seconds = rng.uniform(2.0, 10.0) if rng.random() < SHORT_SHARE else 10.0
    t = max(1, int(round(fps * seconds)))
    m = int(rng.choice(5, p=PERSONS_P)) + 1
    h, w = (int(v) for v in IMG_SHAPES[rng.choice(len(IMG_SHAPES), p=IMG_P)])
    height = rng.uniform(0.3, 0.9, size=(m, 1, 1, 1)) * h
    start = rng.uniform(0.2, 0.8, size=(m, 1, 1, 2)) * np.array([w, h])
    drift = np.cumsum(rng.normal(0, 0.004, size=(m, t, 1, 2)), axis=1) * np.array([w, h])
    jitter = rng.normal(0, 0.01, size=(m, t, JOINTS, 2)) * height
    kp = (start + drift + _POSE[None, None] * height + jitter).astype(np.float32)
    sc = rng.beta(6, 2, size=(m, t, JOINTS)).astype(np.float32)
    sc[rng.random((m, t, JOINTS)) < 0.08] = 0.0
    vid = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789-_"), size=11))
    start_s = int(rng.integers(0, 300))
    return {"frame_dir": f"{vid}_{start_s:06d}_{start_s + 10:06d}_{i}",
            "label": int(rng.integers(0, K400_CLASSES)), "img_shape": (h, w),
            "original_shape": (h, w), "total_frames": t, "keypoint": kp,
            "keypoint_score": sc}


# --------------------------------------------------------------------------- memory


def memory(pid: int | str = "self") -> dict:
    """RSS, PSS and USS (private clean + dirty) of a process in MiB, from smaps_rollup."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0].endswith(":"):
                    fields[parts[0][:-1]] = int(parts[1]) / 1024  # kB -> MiB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return {"rss": fields.get("Rss", 0.0), "pss": fields.get("Pss", 0.0),
            "uss": fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return sorted(set(out))


class MemoryPeaks:
    """The largest RSS/PSS/USS seen of this process and of each of its worker processes."""

    def __init__(self):
        self.main: dict = {}
        self.workers: dict[int, dict] = {}

    @staticmethod
    def _max(into: dict, m: dict) -> None:
        for k, v in m.items():
            into[k] = max(into.get(k, 0.0), v)

    def sample(self) -> None:
        self._max(self.main, memory())
        for pid in children(os.getpid()):
            self._max(self.workers.setdefault(pid, {}), memory(pid))

    def result(self) -> dict:
        return {"main": self.main, "workers_mem": list(self.workers.values())}


# --------------------------------------------------------------------------- building


def build(directory: Path, n: int, seed: int) -> dict:
    """Write the store and the pickle of ``n`` sequences; returns write timings and sizes."""
    from heatvol import PoseWriter

    store_path, pickle_path = directory / "poses.h5", directory / "poses.pkl"
    rng = np.random.default_rng(seed)
    annotations = []
    write_s = 0.0
    with PoseWriter(store_path, layout="coco17", mode="w",
                    classes=[f"class_{c}" for c in range(K400_CLASSES)]) as writer:
        for i in range(n):
            a = k400_like(rng, i)
            annotations.append(a)
            t0 = time.perf_counter()
            writer.append(a["frame_dir"], a["keypoint"], a["keypoint_score"], label=a["label"],
                          img_shape=a["img_shape"], fps=0.0, source=a["frame_dir"] + ".mp4")
            write_s += time.perf_counter() - t0
        names = [a["frame_dir"] for a in annotations]
        n_train = int(round(n * 240 / 260))  # Kinetics-400: ~240k train, ~20k val
        split = {"train": names[:n_train], "val": names[n_train:]}
        t0 = time.perf_counter()
        writer.set_splits(split)
    write_s += time.perf_counter() - t0  # close(): last commit and compaction
    t0 = time.perf_counter()
    with open(pickle_path, "wb") as f:
        pickle.dump({"split": split, "annotations": annotations}, f, protocol=2)
    pickle_s = time.perf_counter() - t0
    rows = sum(a["keypoint"].shape[0] * a["keypoint"].shape[1] for a in annotations)
    frames = sum(a["total_frames"] for a in annotations)
    info = {"sequences": n, "seed": seed, "frames": frames, "person_frames": rows,
            "raw_mb": rows * JOINTS * 3 * 4 / 2**20,
            "store_write_s": write_s, "store_mb": store_path.stat().st_size / 2**20,
            "pickle_write_s": pickle_s, "pickle_mb": pickle_path.stat().st_size / 2**20}
    (directory / "build.json").write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- measurements


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _warm_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def measure_store_reads(directory: Path, reads: int, seed: int) -> dict:
    from heatvol import PoseStore

    path = directory / "poses.h5"
    base = memory()
    _warm_cache(path)  # open time without disk reads of the index
    t0 = time.perf_counter()
    store = PoseStore(path)
    open_s = time.perf_counter() - t0
    opened = memory()
    n = len(store)
    rng = np.random.default_rng(seed + 1)
    pick = rng.integers(0, n, size=reads)
    cold = []
    for i in pick:
        _drop_cache(path)
        t0 = time.perf_counter()
        rec = store[int(i)]
        cold.append(time.perf_counter() - t0)
        assert rec.keypoints.shape[2] == JOINTS
    _warm_cache(path)
    warm = []
    for i in rng.integers(0, n, size=reads):
        t0 = time.perf_counter()
        store[int(i)]
        warm.append(time.perf_counter() - t0)
    store.close()
    return {"open_s": open_s, "base": base, "opened": opened, "reads": reads,
            "cold": _percentiles(cold), "warm": _percentiles(warm)}


class PickleDataset:
    """pyskl's BaseDataset over a loaded annotation list, with heatvol's train pipeline.

    Item ``(epoch, index)``: ``copy.deepcopy`` of the list entry (as pyskl's
    ``prepare_train_frames``), the PoseC3D train pipeline with :func:`heatvol.data.sample_rng`,
    persons cut or padded to ``max_persons``: the same work as ``PoseDataset(render_device="cuda")``
    except for where the sequence comes from.
    """

    def __init__(self, infos: list, *, clip_len: int, size: int, max_persons: int, seed: int):
        from heatvol.transforms import train_pipeline

        self.infos, self.max_persons, self.seed = infos, max_persons, seed
        self.pipeline = train_pipeline(clip_len, size, "coco17")

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, item):
        from heatvol.data import sample_rng
        from heatvol.transforms import Clip

        epoch, index = item
        info = copy.deepcopy(self.infos[index])
        clip = self.pipeline(Clip(info["keypoint"], info["keypoint_score"], info["img_shape"]),
                             sample_rng(self.seed, epoch, index))
        kp, sc = clip.keypoints[:self.max_persons], clip.scores[:self.max_persons]
        pad = self.max_persons - kp.shape[0]
        if pad > 0:
            kp = np.concatenate([kp, np.zeros((pad,) + kp.shape[1:], np.float32)])
            sc = np.concatenate([sc, np.zeros((pad,) + sc.shape[1:], np.float32)])
        return {"keypoints": kp, "scores": sc, "label": info["label"], "index": index}


def _epoch(dataset, workers: int, batch_size: int, seed: int, peaks: MemoryPeaks) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from heatvol.data import ResumableSampler

    sampler = ResumableSampler(len(dataset), seed=seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        generator=gen, prefetch_factor=4 if workers else None,
                        persistent_workers=False)
    seen = 0
    t0 = time.perf_counter()
    for b, batch in enumerate(loader):
        seen += len(batch["label"])
        if b % 10 == 0:
            peaks.sample()
    seconds = time.perf_counter() - t0
    peaks.sample()
    return {"workers": workers, "sequences": seen, "epoch_s": seconds,
            "sequences_per_s": seen / seconds}


def measure_store_epoch(directory: Path, workers: int, batch_size: int, seed: int) -> dict:
    from heatvol import PoseStore
    from heatvol.data import PoseDataset

    base = memory()
    store = PoseStore(directory / "poses.h5")
    dataset = PoseDataset(store, store.split("train"), train=True, clip_len=48, size=56,
                          render_device="cuda", max_persons=2, seed=seed)
    built = memory()
    peaks = MemoryPeaks()
    res = _epoch(dataset, workers, batch_size, seed, peaks)
    return {**res, "base": base, "built": built, **peaks.result()}


def measure_pickle_epoch(directory: Path, workers: int, batch_size: int, seed: int) -> dict:
    base = memory()
    _warm_cache(directory / "poses.pkl")  # load time without the disk
    t0 = time.perf_counter()
    with open(directory / "poses.pkl", "rb") as f:
        data = pickle.load(f)
    load_s = time.perf_counter() - t0
    loaded = memory()
    train = set(data["split"]["train"])  # as pyskl's PoseDataset.load_annotations
    infos = [a for a in data["annotations"] if a["frame_dir"] in train]
    dataset = PickleDataset(infos, clip_len=48, size=56, max_persons=2, seed=seed)
    peaks = MemoryPeaks()
    res = _epoch(dataset, workers, batch_size, seed, peaks)
    return {**res, "load_s": load_s, "base": base, "loaded": loaded, **peaks.result()}


# --------------------------------------------------------------------------- driver


def _child(args, what: str, workers: int = 0) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", what, "--dir",
           str(args.dir), "--workers", str(workers), "--batch-size", str(args.batch_size),
           "--reads", str(args.reads), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _m3(m: dict) -> str:
    return f"{m['rss']:.0f} / {m['pss']:.0f} / {m['uss']:.0f}" if m else "-"


def _worker_peak(r: dict) -> dict:
    ws = r["workers_mem"]
    return {k: max(w[k] for w in ws) for k in ("rss", "pss", "uss")} if ws else {}


def _rows(res: dict) -> list[tuple[str, str, str]]:
    """(measure, store cell, pickle cell) of one size."""
    b, reads = res["build"], res["reads"]
    st, pk = res["store_epochs"], res["pickle_epochs"]
    rows = [
        ("write", f"{b['store_write_s']:.1f} s ({b['sequences'] / b['store_write_s']:.0f} seq/s)",
         f"{b['pickle_write_s']:.1f} s"),
        ("file size (MiB)", f"{b['store_mb']:.0f}", f"{b['pickle_mb']:.0f}"),
        ("open / pickle.load", f"{reads['open_s'] * 1000:.0f} ms", f"{pk[0]['load_s']:.1f} s"),
        ("RSS added by open / load (MiB)",
         f"{reads['opened']['rss'] - reads['base']['rss']:.0f}",
         f"{pk[0]['loaded']['rss'] - pk[0]['base']['rss']:.0f}"),
        ("read 1 sequence, cold cache: p50 / p99 (ms)",
         f"{reads['cold']['p50_ms']:.2f} / {reads['cold']['p99_ms']:.2f}", "in RAM"),
        ("read 1 sequence, warm cache: p50 / p99 (ms)",
         f"{reads['warm']['p50_ms']:.2f} / {reads['warm']['p99_ms']:.2f}", "in RAM"),
    ]
    for i, (rs, rp) in enumerate(zip(st, pk)):
        w = rs["workers"]
        rows.append((f"epoch, {w} workers (sequences/s)", f"{rs['sequences_per_s']:.0f}",
                     f"{rp['sequences_per_s']:.0f}"))
    rows.append(("load average (1 min) after each epoch",
                 ", ".join(f"{r['load_average']:.1f}" for r in st),
                 ", ".join(f"{r['load_average']:.1f}" for r in pk)))
    rows.append(("main process before opening: RSS", f"{st[0]['base']['rss']:.0f}",
                 f"{pk[0]['base']['rss']:.0f}"))
    for rs, rp in zip(st, pk):
        rows.append((f"main process, {rs['workers']} workers: RSS / PSS / USS",
                     _m3(rs["main"]), _m3(rp["main"])))
    for rs, rp in zip(st, pk):
        if rs["workers"]:
            rows.append((f"each of {rs['workers']} workers (largest): RSS / PSS / USS",
                         _m3(_worker_peak(rs)), _m3(_worker_peak(rp))))
    return rows


def table(results: list[dict]) -> str:
    """One Markdown table: a row per measure, store and pickle columns per size."""
    head = ["measure"]
    for res in results:
        n = res["build"]["sequences"]
        head += [f"store, {n:,}", f"pickle, {n:,}"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    per_size = [_rows(res) for res in results]
    for i, (measure, _, _) in enumerate(per_size[0]):
        cells = [measure] + [c for rows in per_size for c in rows[i][1:]]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = "; ".join(f"{r['build']['sequences']:,} sequences: {r['build']['frames']:,} frames, "
                      f"{r['build']['person_frames']:,} person-frames "
                      f"({r['build']['raw_mb']:.0f} MiB as float32 x, y, score)"
                      for r in results)
    return sizes + ". Memory in MiB.\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, nargs="+", default=[2000],
                   help="one or more dataset sizes, measured one after the other")
    p.add_argument("--dir", type=Path, default=Path("/tmp/heatvol_store_scale"))
    p.add_argument("--workers", type=int, default=2, help="the DataLoader run with workers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reads", type=int, default=300, help="random reads per cache state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write all figures here")
    p.add_argument("--rebuild", action="store_true", help="rewrite the data files")
    p.add_argument("--clean", action="store_true", help="remove the data files at the end")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.measure:  # a child process: one measurement, JSON on the last stdout line
        import torch  # noqa: F401  (imported before the base memory, as in training)

        import heatvol  # noqa: F401

        fn = {"reads": lambda: measure_store_reads(args.dir, args.reads, args.seed),
              "store": lambda: measure_store_epoch(args.dir, args.workers, args.batch_size,
                                                   args.seed),
              "pickle": lambda: measure_pickle_epoch(args.dir, args.workers, args.batch_size,
                                                     args.seed)}[args.measure]
        res = fn()
        res["load_average"] = os.getloadavg()[0]  # the machine may be shared: say how busy
        print(json.dumps(res))
        return 0

    if min(args.sequences) < 1:
        p.error("--sequences must be >= 1")
    root, results = args.dir, []
    for n in args.sequences:
        args.dir = root / f"n{n}-seed{args.seed}"
        args.dir.mkdir(parents=True, exist_ok=True)
        info_path = args.dir / "build.json"
        if args.rebuild or not info_path.is_file() or not (args.dir / "poses.pkl").is_file():
            build_info = build(args.dir, n, args.seed)
        else:
            build_info = json.loads(info_path.read_text())
        res = {"build": build_info, "reads": _child(args, "reads"), "store_epochs": [],
               "pickle_epochs": []}
        for workers in (0, args.workers):
            res["store_epochs"].append(_child(args, "store", workers))
            res["pickle_epochs"].append(_child(args, "pickle", workers))
        results.append(res)
        if args.clean:
            for f in args.dir.iterdir():
                f.unlink()
            args.dir.rmdir()
    print(f"# store_scale: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
