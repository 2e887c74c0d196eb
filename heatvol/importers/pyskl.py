"""pyskl / mmaction2 skeleton annotation pickles: import and export.

**Security: a pickle can execute arbitrary code when it is loaded. Import only pickles you
trust** (the ones you made, or from the dataset's authors). ``export_pyskl`` writes only
plain dicts, lists, strings, ints and NumPy arrays.

Format (pyskl's ``PoseDataset``)::

    {"split": {split_name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "label": int, "img_shape": (H, W),
                      "original_shape": (H, W), "total_frames": T,
                      "keypoint": [M, T, V, C],        # C = 2: pixels; C = 3: 3D
                      "keypoint_score": [M, T, V]},    # 2D only
                     ...]}

Import:

- Names are ``frame_dir``; label ``label`` (missing: -1); the splits are kept (members with
  no annotation are dropped and reported once per split).
- Layout from V: 17 coco17, 18 openpose18, 25 ntu25, 20 kinect20, 13 penn13, 33 blazepose33,
  unless ``layout=`` names one; dims from C of the first annotation. Annotations whose V or C
  differ from the first are problems.
- keypoints/scores are stored as float32 of the pickled values (float16 and float32 exactly).
  ``keypoint_score`` outside [0, 1] makes the annotation a problem (the store refuses it; no
  clipping). A 2D annotation without ``keypoint_score`` gets scores 1. 3D annotations carry
  no scores: joints at exactly (0, 0, 0) get score 0 (pyskl's zero padding of absent bodies
  and frames), the others 1.
- img_shape: ``img_shape``, else ``original_shape`` (required for 2D; kept for 3D when
  present). fps 0 (unknown: the pickles do not say). ``total_frames`` must equal T.
- Classes: pyskl pickles carry no class names, so they are ``class_0`` ... ``class_{max
  label}``; a top-level ``"classes"`` list (which ``export_pyskl`` writes) supplies the names.
- Compressed form (pyskl's Kinetics-400 pickles): ``keypoint`` [N, V, 3] (x, y, score) with
  ``frame_inds`` [N] (and ``box_score`` [N], ``valid``, optional ``anno_inds``). Decompressed
  as pyskl's ``DecompressPose`` with its defaults (squeeze=True, max_person=10):
  ``anno_inds`` (when present) selects the poses; poses are grouped by frame in order of
  appearance (a stable sort by frame index, which is the identity for pyskl's monotonic
  files); frames without any pose are dropped (T = number of distinct frame indices);
  M = the most poses in one frame, padded with zeros (score 0). Only when M > 10 are each
  frame's poses sorted by summed keypoint score (summed in float16, as pyskl does; stable,
  so ties keep their order) and the first 10 kept. Unlike pyskl, coordinates stay at the
  pickled precision instead of being rounded to float16. ``box_score`` and ``valid`` only
  feed pyskl's optional dataset filters (box_thr / valid_ratio) and are ignored: every
  pose is imported.

Export (``export_pyskl``) writes the same format, in store order: ``frame_dir`` = name,
``label``, ``total_frames`` = T, ``keypoint`` float32 [M, T, V, C]; 2D adds
``keypoint_score`` float32 [M, T, V] and ``img_shape`` = ``original_shape`` = the store's
(H, W). 3D annotations have no ``keypoint_score`` (pyskl's GCN pipeline asserts that only 2D
keypoints have scores) and carry ``img_shape``/``original_shape`` only when the store has
one. ``split`` = the store's splits; ``classes`` = the store's class names (an extra key that
pyskl ignores). ``import(export(store))`` reproduces keypoints, scores, labels, img_shape,
classes and splits exactly, except for 3D scores that the zero rule cannot express (a score
other than 0/1, or a 0 at non-zero coordinates): those sequences are written with the
coordinates of missing joints zeroed, and a warning says how many.

The pickle loads under NumPy 1.x as well as 2.x (checked with 1.23.5 and 1.26.4): arrays
are pickled as ``numpy.ndarray(shape, dtype, bytearray)`` (protocol 4) instead of NumPy's
own reduction, which under NumPy 2 names ``numpy._core``, a module NumPy < 1.26 lacks
(pyskl environments often pin such a NumPy; numpy/numpy#28340).
"""

from __future__ import annotations

import copyreg
import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from ..store import PoseRecord
from . import Entry, ImportFailed, Source, SourceProblem, scores_from_zero_rule

LAYOUT_OF_JOINTS = {17: "coco17", 18: "openpose18", 25: "ntu25", 20: "kinect20", 13: "penn13",
                    33: "blazepose33"}
#: pyskl's DecompressPose default.
MAX_PERSONS_COMPRESSED = 10


# --------------------------------------------------------------------------- import


def open_source(src: Path, *, layout: str | None = None) -> Source:
    from ..layouts import layout as get_layout

    src = Path(src)
    data = _load_pickle(src)
    annotations = data["annotations"]
    if not annotations:
        raise ImportFailed(f"{src}: the pickle holds no annotations")

    # Layout and dims from the first annotation with a usable keypoint array.
    first = _peek_shape(src, annotations)
    num_joints, dims = first
    if layout is None:
        if num_joints not in LAYOUT_OF_JOINTS:
            raise ImportFailed(f"{src}: no known layout has {num_joints} joints; pass a layout "
                               f"({', '.join(f'{v}: {k}' for k, v in LAYOUT_OF_JOINTS.items())})")
        layout_name = LAYOUT_OF_JOINTS[num_joints]
    else:
        layout_name = get_layout(layout).name
        if get_layout(layout_name).num_joints != num_joints:
            raise ValueError(f"layout {layout_name!r} has {get_layout(layout_name).num_joints} "
                             f"joints, the pickle's keypoints have {num_joints}")

    problems: list[str] = []
    frame_dirs = [a.get("frame_dir") if isinstance(a, dict) else None for a in annotations]
    known = {fd for fd in frame_dirs if isinstance(fd, str) and fd}
    split_of: dict[str, list[str]] = {}
    raw_splits = data.get("split") or {}
    if not isinstance(raw_splits, dict):
        raise ImportFailed(f"{src}: 'split' is a {type(raw_splits).__name__}, not a dict")
    for split, members in raw_splits.items():
        members = [str(m) for m in members]
        dangling = [m for m in members if m not in known]
        if dangling:
            problems.append(f"{src}: split {split!r} lists {len(dangling)} frame_dir(s) with no "
                            f"annotation (first: {dangling[0]!r}); dropped from the split")
        for m in members:
            split_of.setdefault(m, []).append(str(split))

    entries = []
    for i, (ann, fd) in enumerate(zip(annotations, frame_dirs)):
        where = f"{src}: annotation {i} ({fd!r})" if fd else f"{src}: annotation {i}"
        if not isinstance(fd, str) or not fd:
            problems.append(f"{where}: no frame_dir")
            continue
        entries.append(Entry(name=fd, where=where, splits=tuple(split_of.get(fd, ())),
                             payload=(ann, num_joints, dims, src.name)))

    classes = data.get("classes")
    if classes is not None:
        classes = [str(c) for c in classes]
    else:
        labels = [a.get("label", -1) for a in annotations if isinstance(a, dict)]
        top = max((int(lb) for lb in labels if _is_int(lb)), default=-1)
        classes = [f"class_{i}" for i in range(top + 1)]
    return Source(layout=layout_name, dims=dims, entries=entries, load=load_entry,
                  classes=classes, split_names=tuple(str(s) for s in raw_splits),
                  problems=problems, unit="seq")


def _load_pickle(src: Path) -> dict:
    if not src.is_file():
        raise ImportFailed(f"{src}: no such file")
    try:
        with open(src, "rb") as f:
            data = pickle.load(f)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ImportFailed(f"{src}: cannot unpickle ({type(exc).__name__}: {exc})") from None
    if isinstance(data, list):  # a bare annotation list (mmaction2 0.x style): no splits
        data = {"annotations": data}
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ImportFailed(f"{src}: not a pyskl annotation pickle (expected a dict with an "
                           f"'annotations' list)")
    return data


def _peek_shape(src: Path, annotations: list) -> tuple[int, int]:
    """(V, C) of the first annotation whose keypoint array has a usable shape."""
    for ann in annotations:
        if not isinstance(ann, dict) or "keypoint" not in ann:
            continue
        kp = np.asarray(ann["keypoint"])
        if "frame_inds" in ann and kp.ndim == 3 and kp.shape[-1] == 3:
            return kp.shape[1], 2
        if kp.ndim == 4 and kp.shape[-1] in (2, 3):
            return kp.shape[2], kp.shape[3]
    raise ImportFailed(f"{src}: no annotation has a keypoint array [M, T, V, 2 or 3] "
                       f"(or the compressed [N, V, 3] with frame_inds)")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def load_entry(entry: Entry) -> PoseRecord:
    ann, num_joints, dims, source_name = entry.payload
    if not isinstance(ann, dict):
        raise SourceProblem(f"annotation is a {type(ann).__name__}, not a dict")
    label = ann.get("label", -1)
    if not _is_int(label):
        raise SourceProblem(f"label {label!r} is not an int")
    if "keypoint" not in ann:
        raise SourceProblem("no keypoint array")

    if "frame_inds" in ann:
        if dims != 2:
            raise SourceProblem("compressed (frame_inds) annotation in a 3D pickle")
        keypoints, scores = decompress(ann, num_joints)
    else:
        keypoints = np.asarray(ann["keypoint"])
        if keypoints.ndim != 4 or keypoints.shape[2] != num_joints or keypoints.shape[3] != dims:
            raise SourceProblem(f"keypoint has shape {list(keypoints.shape)}, expected "
                                f"[M, T, {num_joints}, {dims}] like the first annotation")
        keypoints = keypoints.astype(np.float32)
        total = ann.get("total_frames")
        if total is not None and int(total) != keypoints.shape[1]:
            raise SourceProblem(f"total_frames {total} differs from the keypoint array's "
                                f"T = {keypoints.shape[1]}")
        if "keypoint_score" in ann:
            scores = np.asarray(ann["keypoint_score"])
            if scores.shape != keypoints.shape[:3]:
                raise SourceProblem(f"keypoint_score has shape {list(scores.shape)}, keypoint "
                                    f"{list(keypoints.shape)}")
            scores = scores.astype(np.float32)
        elif dims == 3:
            scores = scores_from_zero_rule(keypoints)
        else:
            scores = np.ones(keypoints.shape[:3], np.float32)
    if not (np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()):
        raise SourceProblem(f"keypoint_score outside [0, 1] (min {np.nanmin(scores):g}, "
                            f"max {np.nanmax(scores):g}); not clipped")

    img_shape = ann.get("img_shape")
    if img_shape is None:
        img_shape = ann.get("original_shape")
    if img_shape is not None:
        img_shape = tuple(int(v) for v in img_shape)
        if len(img_shape) != 2 or min(img_shape) <= 0:
            if dims == 2:
                raise SourceProblem(f"bad img_shape {img_shape}")
            img_shape = None
    elif dims == 2:
        raise SourceProblem("2D annotation without img_shape / original_shape")
    return PoseRecord(name=entry.name, keypoints=keypoints, scores=scores, label=int(label),
                      img_shape=img_shape, fps=0.0, source=source_name)


def decompress(ann: dict, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """The compressed form -> (keypoints float32 [M, T, V, 2], scores float32 [M, T, V]),
    as pyskl's DecompressPose(squeeze=True, max_person=10); see the module docstring."""
    poses = np.asarray(ann["keypoint"])
    frame_inds = np.asarray(ann["frame_inds"]).reshape(-1)
    if poses.ndim != 3 or poses.shape[1] != num_joints or poses.shape[2] != 3:
        raise SourceProblem(f"compressed keypoint has shape {list(poses.shape)}, expected "
                            f"[N, {num_joints}, 3]")
    if len(frame_inds) != len(poses):
        raise SourceProblem(f"frame_inds has {len(frame_inds)} entries, keypoint {len(poses)}")
    if "anno_inds" in ann and ann["anno_inds"] is not None:
        sel = np.asarray(ann["anno_inds"])
        poses, frame_inds = poses[sel], frame_inds[sel]
    if len(poses) == 0:
        raise SourceProblem("no poses (compressed annotation with empty keypoint)")
    if not np.issubdtype(frame_inds.dtype, np.integer):
        raise SourceProblem(f"frame_inds has dtype {frame_inds.dtype}, expected integers")

    order = np.argsort(frame_inds, kind="stable")
    poses, frame_inds = poses[order], frame_inds[order]
    # squeeze: frame t of the result is the t-th distinct frame index.
    frames, t_of_pose, per_frame = np.unique(frame_inds, return_inverse=True, return_counts=True)
    num_frames = len(frames)
    starts = np.concatenate([[0], np.cumsum(per_frame)[:-1]])
    slot_of_pose = np.arange(len(poses)) - starts[t_of_pose]  # rank in order of appearance
    num_persons = int(per_frame.max())

    if num_persons > MAX_PERSONS_COMPRESSED:
        # pyskl sorts each frame's poses by summed score (float16, stable) and keeps the top 10.
        score_sum = poses[..., 2].astype(np.float16).sum(-1)
        order = np.lexsort((-score_sum.astype(np.float64), t_of_pose))  # by frame, then score
        poses, t_of_pose = poses[order], t_of_pose[order]
        slot_of_pose = np.arange(len(poses)) - starts[t_of_pose]
        keep = slot_of_pose < MAX_PERSONS_COMPRESSED
        poses, t_of_pose, slot_of_pose = poses[keep], t_of_pose[keep], slot_of_pose[keep]
        num_persons = MAX_PERSONS_COMPRESSED

    keypoints = np.zeros((num_persons, num_frames, num_joints, 2), np.float32)
    scores = np.zeros((num_persons, num_frames, num_joints), np.float32)
    keypoints[slot_of_pose, t_of_pose] = poses[..., :2]
    scores[slot_of_pose, t_of_pose] = poses[..., 2]
    return keypoints, scores


# --------------------------------------------------------------------------- export


def export_pyskl(store: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the pose store ``store`` as a pyskl annotation pickle at ``out`` (replaced
    atomically); returns the number of annotations. Format and exactness: module docstring."""
    from ..store import PoseStore

    out = Path(out)
    annotations = []
    lossy = 0
    with PoseStore(store) as poses:
        dims = poses.dims
        for rec in poses:
            ann = {"frame_dir": rec.name, "label": int(rec.label),
                   "total_frames": int(rec.num_frames)}
            keypoints = np.ascontiguousarray(rec.keypoints, dtype=np.float32)
            if dims == 2:
                ann["keypoint"] = keypoints
                ann["keypoint_score"] = np.ascontiguousarray(rec.scores, dtype=np.float32)
            else:
                if not np.array_equal(scores_from_zero_rule(keypoints), rec.scores):
                    # Scores 3D pyskl cannot carry: keep what the zero rule can say.
                    keypoints = np.where((rec.scores == 0)[..., None], np.float32(0), keypoints)
                    lossy += 1
                ann["keypoint"] = keypoints
            if rec.img_shape is not None:
                ann["img_shape"] = tuple(rec.img_shape)
                ann["original_shape"] = tuple(rec.img_shape)
            annotations.append(ann)
        data = {"split": {k: list(v) for k, v in poses.splits.items()},
                "annotations": annotations, "classes": list(poses.classes)}
    if lossy:
        warnings.warn(f"{out}: {lossy} 3D sequence(s) have scores other than 1 at present and "
                      f"0 at (0, 0, 0) joints; pyskl 3D annotations carry no scores, so their "
                      f"missing joints were written as (0, 0, 0)", stacklevel=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _PortablePickler(f, protocol=4).dump(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(annotations)


def _reduce_array(array: np.ndarray):
    # numpy.ndarray is "numpy.ndarray" in every NumPy; a bytearray buffer keeps it writable.
    array = np.ascontiguousarray(array)
    return np.ndarray, (array.shape, array.dtype.str, bytearray(array.tobytes()))


class _PortablePickler(pickle.Pickler):
    """Pickles ndarrays so that NumPy 1.x and 2.x both load them (see the module docstring)."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[np.ndarray] = _reduce_array
