"""Videos, folders of frames and images -> tracked 2D poses in a pose store
(``heatvol extract``).

>>> from heatvol.extract import extract_videos
>>> report = extract_videos(["../shared/data/videos"], "poses.h5",
...                         models_dir="../shared/models")
>>> report.extracted, report.failed

Every input becomes one sequence: a video file (named by its stem), a folder of frames
(named by the folder; frames in name order, digit runs compared as numbers) or one image
(T = 1, named by its stem). Keypoints [M, T, K, 2] in full-frame pixels, scores [M, T, K],
T = the frames decoded, the image shape and fps (0 for frames and images); the sequence's
``source`` is the path; the store's ``attrs["source_kinds"]`` maps the name of every
sequence that is not a video to "frames" or "image", and ``attrs["extractor"]`` says what
the last run used (backend, preset, model files).
Pipeline per sequence: a reader thread decodes ahead (``video.open_sequence``), a backend
finds people in each frame (``topdown`` by default: person detector + pose model per box,
ONNX, offline; or ``blazepose``, ``mmpose``), ``tracking.track_poses`` links them into at
most ``max_persons`` tracks. Model files are found by ``weights.locate``. See
docs/extract.md.

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
from .video import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoError, frame_files,
                    open_sequence, source_kind)

__all__ = ["extract_videos", "extract_video", "ExtractReport", "ExtractError", "make_backend",
           "find_videos", "read_labels", "BackendUnavailable", "BACKENDS"]

BACKENDS = ("topdown", "rtmpose", "blazepose", "mmpose")


class ExtractError(Exception):
    """The extraction cannot start (bad inputs, labels or options); one line."""


@dataclass
class VideoItem:
    path: Path
    name: str
    kind: str = "video"  # "video", "frames" (a folder of images) or "image"
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
    """The sequences named by ``inputs``. A file is a video (any extension but an image's)
    or one image (.jpg, .png, ...; a one-frame sequence). A folder holding video files:
    each is a sequence. A folder holding images (and no video): one sequence of frames, in
    name order. A folder holding neither: each sub-folder holding videos is a class
    (``videos/<class>/*.mp4`` -> label = class name) and each sub-folder holding images is
    a sequence of frames (``images/<sequence>/000001.jpg``, as PoseTrack ships them)."""
    items: list[VideoItem] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            items.append(VideoItem(p, p.stem, kind=source_kind(p)))
        elif p.is_dir():
            direct = sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if direct:
                items += [VideoItem(f, f.stem) for f in direct]
                continue
            if frame_files(p):
                items.append(VideoItem(p, p.name, kind="frames"))
                continue
            for sub in sorted(d for d in p.iterdir() if d.is_dir()):
                videos = [f for f in sorted(sub.rglob("*"))
                          if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS]
                if videos:
                    items += [VideoItem(f, f.stem, label_name=sub.name) for f in videos]
                elif frame_files(sub):
                    items.append(VideoItem(sub, sub.name, kind="frames"))
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
        raise ExtractError("no video, image or folder of frames found in " +
                           ", ".join(str(i) for i in inputs) +
                           f" (videos: {', '.join(sorted(VIDEO_EXTENSIONS))}; images: "
                           f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
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


def _onnx_options(options: dict) -> dict:
    """The options the onnxruntime backends (topdown, rtmpose) take; device "auto" resolved to
    cuda when onnxruntime has its CUDA provider, else cpu."""
    opts = {k: v for k, v in options.items() if k in (
        "layout", "det_score_thr", "det_interval", "device", "num_threads",
        "models_dir") and v is not None}
    if opts.get("device") == "auto":
        import onnxruntime as ort
        opts["device"] = "cuda" if "CUDAExecutionProvider" in \
            ort.get_available_providers() else "cpu"
    return opts


def make_backend(backend: str = "topdown", **options) -> Backend:
    """A backend by name; BackendUnavailable (with the install line, or the model file to
    put where) when it is missing."""
    if backend == "topdown":
        from .topdown import TopDownBackend

        return TopDownBackend(options.get("preset") or "accurate", **_onnx_options(options))
    if backend == "rtmpose":
        from .rtmpose import RTMPoseBackend

        return RTMPoseBackend(options.get("preset") or "rtmpose-m", **_onnx_options(options))
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
    """One video, folder of frames or image -> {"keypoints" [M, T, K, 2], "scores"
    [M, T, K], "img_shape", "fps", "frames", "seconds"}. Raises VideoError when it cannot
    be read."""
    t0 = time.perf_counter()
    reader = open_sequence(path)
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
                   out: str | os.PathLike, *, backend: str = "topdown",
                   preset: str | None = None, models_dir: str | os.PathLike | None = None,
                   layout: str = "coco17", max_persons: int = 2,
                   det_score_thr: float | None = None, workers: int = 1, device: str = "cpu",
                   labels: str | os.PathLike | dict | None = None, overwrite: bool = False,
                   progress: bool = True, det_interval: int | None = None,
                   det_config: str | None = None, det_checkpoint: str | None = None,
                   pose_config: str | None = None, pose_checkpoint: str | None = None,
                   only: Container[str] | None = None,
                   on_failure: Callable[[str, str], None] | None = None) -> ExtractReport:
    """Extract poses from videos, folders of frames and images into the pose store ``out``.

    backend: "topdown" (default; NanoDet + MoveNet ONNX models, offline, CPU or cuda with
    onnxruntime-gpu; preset "accurate" or "fast"; models from models_dir, else
    $HEATVOL_MODELS, else the per-user cache, see weights.locate), "blazepose" (CPU) or
    "mmpose" (det/pose configs and checkpoints; device cpu or cuda). det_score_thr: None =
    the backend's default (topdown 0.15, blazepose and mmpose 0.5). labels: a labels.csv
    path or {stem: label}; folder-per-class inputs label themselves. workers: videos processed in parallel processes (results are
    written by this process). Returns an ExtractReport; failures are also in the store.
    only: extract only the inputs of these names (a shard's share, :mod:`heatvol.shard`);
    classes still come from every input, so shards agree on them.
    """
    from ..progress import progress as progress_display
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
    if device == "cuda" and backend not in ("topdown", "rtmpose"):  # these ask onnxruntime
        import torch
        if not torch.cuda.is_available():
            raise ExtractError("--device cuda asked, but torch sees no usable GPU")
    items = find_videos(inputs)
    label_map = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else labels
    options = {"layout": layout, "max_persons": int(max_persons), "preset": preset,
               "models_dir": None if models_dir is None else str(models_dir),
               "det_score_thr": det_score_thr, "device": device, "det_interval": det_interval,
               "det_config": det_config, "det_checkpoint": det_checkpoint,
               "pose_config": pose_config, "pose_checkpoint": pose_checkpoint}

    # The backend is made before the store is opened: a missing package or model file
    # stops the run before anything is written.
    be = make_backend(backend, **options) if int(workers) <= 1 else None
    if be is None:
        _check_backend(backend, options)
    extractor = be.describe() if be is not None and hasattr(be, "describe") else \
        {"backend": backend, "preset": preset}
    report = ExtractReport()
    try:
        writer = PoseWriter(out, layout=layout, commit_every=1 << 30)
    except BaseException:
        if be is not None:
            be.close()
        raise
    try:
        # Only sequences that are not videos are listed (the meta is rewritten with every
        # commit, so it must stay small for stores of many videos).
        sources = _existing_sources(out)
        writer.set_attrs(extractor=extractor)
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
            if be is not None:
                be.close()
            return report
        by_path = {str(it.path): it for it in todo}
        class_index = {c: i for i, c in enumerate(writer.classes)}
        total_est = 0
        for it in todo:
            try:
                total_est += open_sequence(it.path).info.frame_count
            except VideoError:
                pass

        bar = progress_display(total=total_est or None, unit="frame", desc="extract",
                               enabled=progress)
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
                    with bar.external_write():
                        on_failure(item.name, reason)
            else:
                label = item.label_index if item.label_index is not None else \
                    class_index.get(item.label_name, -1) if item.label_name is not None else -1
                writer.append(item.name, result["keypoints"], result["scores"], label=label,
                              img_shape=result["img_shape"], fps=result["fps"],
                              source=str(item.path))
                if item.kind != "video" or sources.pop(item.name, None) is not None:
                    if item.kind != "video":
                        sources[item.name] = item.kind
                    writer.set_attrs(source_kinds=sources)
                writer.commit()
                report.extracted.append(item.name)
                report.frames += result["frames"]
                report.persons[item.name] = int(result["keypoints"].shape[0])
            set_postfix()

        try:
            if be is not None:
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


def _existing_sources(out) -> dict:
    """attrs["source_kinds"] of an existing store ({} for a new one)."""
    from ..store import PoseStore, StoreError

    try:
        with PoseStore(out) as store:
            return dict(store.attrs.get("source_kinds", {}))
    except (StoreError, OSError):
        return {}


def _check_backend(backend: str, options: dict) -> None:
    """Fail early, in this process, when the backend is not installed (before workers)."""
    if backend in ("topdown", "rtmpose"):
        make_backend(backend, **options).close()
    elif backend == "blazepose":
        from .blazepose import model_paths
        model_paths()
    else:
        from .mmpose import require
        require()


def _run_parallel(todo, by_path, backend, options, workers, record, bar) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

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
