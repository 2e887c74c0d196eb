"""Penn Action (Zhang, Zhu, Derpanis, ICCV 2013): a folder of ``NNNN.mat`` label files.

Each MATLAB v5 file (read with ``scipy.io.loadmat``) holds one video's human-annotated 2D joints:

=============  ======================  ===================================================
key            type                    used as
=============  ======================  ===================================================
``x``, ``y``   float64 [T, 13]         pixels; keypoints [1, T, 13, 2] = float32(stack(x, y))
``visibility`` uint8 [T, 13] (0 / 1)   scores float32 [1, T, 13] (0 = occluded / outside)
``dimensions`` [H, W, T]               img_shape = (H, W)
``action``     str                     label = index in the 15 sorted action names
``train``      1 / -1                  split ``train`` (1,258 videos) / ``test`` (1,068)
``nframes``    uint8 or uint16         ignored: uint8 overflows past 255 frames, T is
                                       x.shape[0]; x, y and visibility must agree on T
``bbox``, ``pose``                     ignored (box; camera view)
=============  ======================  ===================================================

Joints (layout ``penn13``): head, left/right shoulder, elbow, wrist, hip, knee, ankle.
Coordinates are stored exactly as annotated (also for invisible joints, whose score is 0).
fps: 30. The files do not say; Penn Action's videos are YouTube clips at about 30 fps.
Names are the file stems (``0001``); ``source`` is the file name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store import PoseRecord
from . import Entry, Source, SourceProblem, check_layout, list_files

#: The 15 actions, sorted: the label is the index here.
CLASSES: tuple[str, ...] = tuple(sorted((
    "baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing",
    "jump_rope", "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar",
    "tennis_forehand", "tennis_serve")))
NUM_JOINTS = 13
FPS = 30.0
_LABEL_OF = {name: i for i, name in enumerate(CLASSES)}
_SPLIT_OF = {1: "train", -1: "test"}


def open_source(src: Path, *, layout: str | None = None) -> Source:
    files = list_files(src, "*.mat")
    entries = [Entry(name=p.stem, where=str(p), payload=p) for p in files]
    return Source(layout=check_layout("penn-action", "penn13", layout), dims=2, entries=entries,
                  load=load_entry, classes=list(CLASSES), split_names=("train", "test"))


def load_entry(entry: Entry) -> PoseRecord:
    return load_mat(entry.payload)


def load_mat(path: Path) -> PoseRecord:
    """One ``.mat`` file -> PoseRecord: keypoints float32 [1, T, 13, 2], scores float32
    [1, T, 13]; raises SourceProblem naming what is wrong."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy's errors (IndexError...) say nothing useful
        raise SourceProblem(_unreadable(Path(path), exc)) from None
    missing = [k for k in ("x", "y", "visibility", "dimensions", "action", "train") if k not in mat]
    if missing:
        raise SourceProblem(f"missing {', '.join(missing)}")
    x, y, vis = (np.asarray(mat[k]) for k in ("x", "y", "visibility"))
    for key, arr in (("x", x), ("y", y), ("visibility", vis)):
        if arr.ndim != 2 or arr.shape[1] != NUM_JOINTS:
            raise SourceProblem(f"{key} has shape {list(arr.shape)}, expected [T, {NUM_JOINTS}]")
    if not x.shape[0] == y.shape[0] == vis.shape[0]:
        raise SourceProblem(f"x, y and visibility disagree on the frame count "
                            f"({x.shape[0]}, {y.shape[0]}, {vis.shape[0]})")
    if x.shape[0] < 1:
        raise SourceProblem("no frames")
    if not np.isin(vis, (0, 1)).all():
        raise SourceProblem(f"visibility holds values other than 0 and 1: "
                            f"{np.unique(vis)[:5].tolist()}")

    action = _scalar_str(mat["action"])
    if action not in _LABEL_OF:
        raise SourceProblem(f"unknown action {action!r}")
    train = int(np.asarray(mat["train"]).ravel()[0])
    if train not in _SPLIT_OF:
        raise SourceProblem(f"train is {train}, expected 1 or -1")
    dims = np.asarray(mat["dimensions"]).ravel()
    if dims.size < 2 or dims[0] <= 0 or dims[1] <= 0:
        raise SourceProblem(f"bad dimensions {dims.tolist()}")

    keypoints = np.stack((x, y), axis=-1).astype(np.float32)[None]
    scores = vis.astype(np.float32)[None]
    return PoseRecord(name=Path(path).stem, keypoints=keypoints, scores=scores,
                      label=_LABEL_OF[action], img_shape=(int(dims[0]), int(dims[1])), fps=FPS,
                      source=Path(path).name, splits=(_SPLIT_OF[train],))


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why scipy could not read ``path``, in words."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "empty file, not a MATLAB .mat file"
    if head.startswith(b"\x89HDF"):
        return "a MATLAB v7.3 (HDF5) file; Penn Action's labels are MATLAB v5 .mat files"
    if not head.startswith(b"MATLAB"):
        return (f"not a MATLAB .mat file (it starts with {head[:16]!r}, not a 'MATLAB 5.0 "
                f"MAT-file' header)")
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"damaged MATLAB .mat file, cannot be read ({reason})"


def _scalar_str(value) -> str:
    arr = np.asarray(value).ravel()
    if arr.size != 1:
        raise SourceProblem(f"action is not one string: {arr.tolist()[:3]}")
    return str(arr[0]).strip()
