"""Videos -> tracked 2D poses in a pose store (``heatvol extract``).

>>> from heatvol.extract import extract_videos
>>> report = extract_videos(["../shared/data/videos"], "poses.h5")
>>> report.extracted, report.failed

Every video becomes one sequence named by its file stem: keypoints [M, T, K, 2] in
full-frame pixels, scores [M, T, K], T = its decoded frame count, its image shape and fps.
Pipeline per video: a reader thread decodes ahead (``video.VideoReader``), a backend finds
people in each frame (``blazepose`` by default, or ``mmpose``), ``tracking.track_poses``
links them into at most ``max_persons`` tracks. See docs/extract.md.

Robustness: videos already in the store are skipped (``overwrite=True`` redoes them); each
video is committed on its own, so a killed run loses at most the videos in flight; an
unreadable, corrupt or zero-frame file is recorded with its reason as a failure of the store
(``heatvol info`` lists them) and the run goes on.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


from .base import Backend, BackendUnavailable, FramePoses
from .tracking import track_poses
from .video import VIDEO_EXTENSIONS, VideoError, VideoReader

__all__ = ["extract_videos", "extract_video", "ExtractReport", "ExtractError", "make_backend",
           "find_videos", "read_labels", "BackendUnavailable", "BACKENDS"]

BACKENDS = ("blazepose", "mmpose")


class ExtractError(Exception):
    """The extraction cannot start (bad inputs, labels or options); one line."""


@dataclass
class VideoItem:
    path: Path
    name: str
    label_name: str | None = None  # class name (folder-per-class or labels.csv)
    label_index: int | None = None  # integer label from labels.csv


@dataclass
class ExtractReport:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    frames: int = 0
    seconds: float = 0.0
    persons: dict[str, int] = field(default_factory=dict)  # name -> M

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- inputs


def find_videos(inputs: Iterable[str | os.PathLike]) -> list[VideoItem]:
    """Videos named by ``inputs``: files as given (any extension), folders searched for video
    files. A folder holding no video itself but sub-folders with videos is a folder-per-class
    layout: ``videos/<class>/*.mp4`` -> label = class name."""
    items: list[VideoItem] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            items.append(VideoItem(p, p.stem))
        elif p.is_dir():
            direct = sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if direct:
                items += [VideoItem(f, f.stem) for f in direct]
                continue
            for sub in sorted(d for d in p.iterdir() if d.is_dir()):
                for f in sorted(sub.rglob("*")):
                    if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS:
                        items.append(VideoItem(f, f.stem, label_name=sub.name))
        else:
            raise ExtractError(f"{p}: no such file or folder")
    seen: dict[str, Path] = {}
    for it in items:
        if it.name in seen and seen[it.name] != it.path:
            raise ExtractError(f"two videos would both be named {it.name!r}: {seen[it.name]} "
                               f"and {it.path} (sequences are named by file stem)")
        seen[it.name] = it.path
    unique = {it.name: it for it in items}
    if not unique:
        raise ExtractError("no video found in " + ", ".join(str(i) for i in inputs) +
                           f" (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return list(unique.values())


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """labels.csv: lines ``video,label`` (video = file name or stem; label = class name or
    integer index); an optional header line ``video,label``. Returns {stem: label}."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if len(row) < 2:
                    raise ExtractError(f"{path}:{lineno}: expected 'video,label', got {row!r}")
                video, label = row[0].strip(), row[1].strip()
                if lineno == 1 and video.lower() in ("video", "name", "file") and \
                        label.lower() in ("label", "class"):
                    continue
                out[Path(video).stem] = label
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read labels ({exc.strerror})") from None
    return out


def _assign_labels(items: list[VideoItem], labels: dict[str, str] | None,
                   existing_classes: Sequence[str]) -> list[str] | None:
    """Fill label_name / label_index; returns the class list to store (None: unchanged)."""
    if labels is not None:
        for it in items:
            if it.name in labels:
                it.label_name = labels[it.name]
    named = [it.label_name for it in items if it.label_name is not None]
    if not named:
        return None
    if all(n.lstrip("-").isdigit() for n in named) and labels is not None and \
            not any(it.label_name is not None and labels.get(it.name) is None for it in items):
        for it in items:  # integer labels: indices as given, classes unchanged
            if it.label_name is not None:
                it.label_index, it.label_name = int(it.label_name), None
        return None
    classes = list(existing_classes)
    classes += [c for c in sorted(set(named)) if c not in classes]
    return classes


# --------------------------------------------------------------------------- backends


def make_backend(backend: str = "blazepose", **options) -> Backend:
    """A backend by name; BackendUnavailable (with the install line) when it is missing."""
    if backend == "blazepose":
        from .blazepose import BlazePoseBackend

        opts = {k: v for k, v in options.items() if k in (
            "layout", "max_persons", "det_score_thr", "det_interval", "presence_thr",
            "num_threads", "device") and v is not None}
        return BlazePoseBackend(**opts)
    if backend == "mmpose":
        from .mmpose import MMPoseBackend

        opts = {k: v for k, v in options.items() if k in (
            "layout", "max_persons", "det_score_thr", "device", "det_config", "det_checkpoint",
            "pose_config", "pose_checkpoint") and v is not None}
        return MMPoseBackend(**opts)
    raise ExtractError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def extract_video(path: str | os.PathLike, backend: Backend, *, max_persons: int = 2,
                  on_frame: Callable[[int], None] | None = None) -> dict:
    """One video -> {"keypoints" [M, T, K, 2], "scores" [M, T, K], "img_shape", "fps",
    "frames", "seconds"}. Raises VideoError when the video cannot be read."""
    t0 = time.perf_counter()
    reader = VideoReader(path)
    per_frame: list[FramePoses] = []

    def frames():
        for i, frame in enumerate(reader):
            yield frame
            if on_frame is not None:
                on_frame(1)

    for fp in backend.process(frames()):
        per_frame.append(fp)
    if reader.frames_read == 0:
        raise VideoError("no frame could be decoded (zero-frame or corrupt video)")
    if len(per_frame) != reader.frames_read:
        raise RuntimeError(f"backend gave {len(per_frame)} results for {reader.frames_read} "
                           f"frames")
    k = next((f.keypoints.shape[1] for f in per_frame if len(f)), None)
    if k is None:
        from ..layouts import layout as get_layout
        k = get_layout(backend.layout).num_joints
    kp, sc = track_poses(per_frame, max_persons, num_joints=k)
    return {"keypoints": kp, "scores": sc, "img_shape": tuple(reader.shape),
            "fps": reader.info.fps, "frames": reader.frames_read,
            "truncated": reader.truncated, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _worker_init(backend: str, options: dict) -> None:
    _WORKER["backend"] = make_backend(backend, **options)
    _WORKER["max_persons"] = options.get("max_persons", 2)


def _worker_run(path: str) -> tuple[str, dict | None, str | None]:
    try:
        return path, extract_video(path, _WORKER["backend"],
                                   max_persons=_WORKER["max_persons"]), None
    except VideoError as exc:
        return path, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the rest
        return path, None, f"{type(exc).__name__}: {exc}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- front door


def extract_videos(inputs: Iterable[str | os.PathLike] | str | os.PathLike,
                   out: str | os.PathLike, *, backend: str = "blazepose",
                   layout: str = "coco17", max_persons: int = 2,
                   det_score_thr: float | None = None, workers: int = 1, device: str = "cpu",
                   labels: str | os.PathLike | dict | None = None, overwrite: bool = False,
                   progress: bool = True, det_interval: int | None = None,
                   det_config: str | None = None, det_checkpoint: str | None = None,
                   pose_config: str | None = None, pose_checkpoint: str | None = None,
                   only: Container[str] | None = None,
                   on_failure: Callable[[str, str], None] | None = None) -> ExtractReport:
    """Extract poses from videos (files or folders) into the pose store ``out``.

    backend: "blazepose" (default; CPU, offline) or "mmpose" (det/pose configs and
    checkpoints; device cpu or cuda). det_score_thr: None = the backend's default
    (0.5 for both). labels: a labels.csv path or {stem: label}; folder-per-class
    inputs label themselves. workers: videos processed in parallel processes (results are
    written by this process). Returns an ExtractReport; failures are also in the store.
    only: extract only the inputs of these names (a shard's share, :mod:`heatvol.shard`);
    classes still come from every input, so shards agree on them.
    """
    from tqdm import tqdm

    from ..store import PoseWriter

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if backend not in BACKENDS:
        raise ExtractError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if int(max_persons) < 1:
        raise ExtractError(f"max_persons must be >= 1, got {max_persons}")
    if device not in ("cpu", "cuda", "auto"):
        raise ExtractError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ExtractError("--device cuda asked, but torch sees no usable GPU")
    items = find_videos(inputs)
    label_map = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else labels
    options = {"layout": layout, "max_persons": int(max_persons),
               "det_score_thr": det_score_thr, "device": device, "det_interval": det_interval,
               "det_config": det_config, "det_checkpoint": det_checkpoint,
               "pose_config": pose_config, "pose_checkpoint": pose_checkpoint}

    report = ExtractReport()
    writer = PoseWriter(out, layout=layout, commit_every=1 << 30)
    try:
        classes = _assign_labels(items, label_map, writer.classes)
        if classes is not None:
            writer.set_classes(classes)
        if only is not None:
            items = [it for it in items if it.name in only]
        todo = []
        for it in items:
            if it.name in writer and not overwrite:
                report.skipped.append(it.name)
            else:
                todo.append(it)
        writer.commit()
        if not todo:
            return report
        by_path = {str(it.path): it for it in todo}
        class_index = {c: i for i, c in enumerate(writer.classes)}
        total_est = 0
        for it in todo:
            try:
                from .video import probe
                total_est += probe(it.path).frame_count
            except VideoError:
                pass

        bar = tqdm(total=total_est or None, unit="frame", desc="extract", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        done_videos = [0]

        def set_postfix():
            bar.set_postfix_str(f"videos {done_videos[0] + len(report.skipped)}/{len(items)}"
                                + (f", {len(report.failed)} failed" if report.failed else ""))

        set_postfix()
        t_start = time.perf_counter()

        def record(item: VideoItem, result: dict | None, reason: str | None) -> None:
            done_videos[0] += 1
            if result is None:
                reason = _one_line(reason or "unknown error")
                report.failed[item.name] = reason
                writer.add_failure(item.name, reason)
                writer.commit()
                if on_failure is not None:
                    with tqdm.external_write_mode():
                        on_failure(item.name, reason)
            else:
                label = item.label_index if item.label_index is not None else \
                    class_index.get(item.label_name, -1) if item.label_name is not None else -1
                writer.append(item.name, result["keypoints"], result["scores"], label=label,
                              img_shape=result["img_shape"], fps=result["fps"],
                              source=str(item.path))
                writer.commit()
                report.extracted.append(item.name)
                report.frames += result["frames"]
                report.persons[item.name] = int(result["keypoints"].shape[0])
            set_postfix()

        try:
            if int(workers) <= 1:
                be = make_backend(backend, **options)
                try:
                    for it in todo:
                        n_before = bar.n
                        try:
                            res = extract_video(it.path, be, max_persons=int(max_persons),
                                                on_frame=bar.update)
                            reason = None
                        except VideoError as exc:
                            res, reason = None, str(exc)
                        except BackendUnavailable:
                            raise
                        except Exception as exc:  # noqa: BLE001 - the run goes on
                            res, reason = None, f"{type(exc).__name__}: {exc}"
                        if res is None and bar.n == n_before:
                            bar.update(0)
                        record(it, res, reason)
                finally:
                    be.close()
            else:
                _run_parallel(todo, by_path, backend, options, int(workers), record, bar)
        finally:
            bar.close()
            report.seconds = time.perf_counter() - t_start
    finally:
        writer.close()
    return report


def _run_parallel(todo, by_path, backend, options, workers, record, bar) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # Fail early, in this process, when the backend is not installed.
    if backend == "blazepose":
        from .blazepose import model_paths
        model_paths()
    else:
        from .mmpose import _import
        _import()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(backend, options)) as pool:
        pending = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                pending.add(pool.submit(_worker_run, str(queue.pop(0).path)))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                path, res, reason = fut.result()
                if res is not None:
                    bar.update(res["frames"])
                record(by_path[path], res, reason)
