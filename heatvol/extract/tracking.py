"""Person tracking over a video: per-frame people -> [M, T, K, 2] sequences with stable indices.

Each frame's people are matched to the live tracks by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on a cost mixing box overlap and keypoint
distance::

    cost = (1 - IoU(track box, person box)) + dist_weight * mean_j ||kp_t[j] - kp_p[j]|| / scale

over the joints both see (score > ``kp_thr``), ``scale`` = the diagonal of the track's box.
A pair is allowed only when IoU >= ``min_iou`` or the normalised distance is under
``max_dist``; unmatched people start new tracks; a track unseen for more than ``max_gap``
frames is no longer matched. Then, as PoseC3D's pipeline does, the ``max_persons`` tracks
with the highest total score (sum over frames of the mean joint score) are kept, ordered by
that total, best first; frames where a kept track was not seen hold zeros with score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .base import FramePoses

__all__ = ["track_poses", "pose_boxes", "box_iou"]

_INF = 1e6


def pose_boxes(keypoints: np.ndarray, scores: np.ndarray, thr: float = 0.1) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) [n, 4] around each person's joints with score > thr (all joints
    when none pass)."""
    kp = np.asarray(keypoints, np.float32).reshape(-1, keypoints.shape[-2], 2)
    sc = np.asarray(scores, np.float32).reshape(kp.shape[:2])
    out = np.zeros((len(kp), 4), np.float32)
    for i in range(len(kp)):
        sel = sc[i] > thr
        pts = kp[i][sel] if sel.any() else kp[i]
        out[i] = [*pts.min(0), *pts.max(0)]
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] of boxes a [N, 4] and b [M, 4]."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _keypoint_distance(kp_a, sc_a, kp_b, sc_b, scale, thr):
    """Mean distance over joints seen in both, / scale; inf when none is shared."""
    both = (sc_a > thr) & (sc_b > thr)
    if not both.any():
        return np.inf
    return float(np.linalg.norm(kp_a[both] - kp_b[both], axis=-1).mean() / max(scale, 1e-6))


def track_poses(frames: Sequence[FramePoses], max_persons: int = 2, *, num_joints: int | None = None,
                dist_weight: float = 1.0, min_iou: float = 0.1, max_dist: float = 0.5,
                max_gap: int = 30, kp_thr: float = 0.1):
    """Track people through ``frames`` (one FramePoses per frame).

    Returns (keypoints float32 [M, T, K, 2], scores float32 [M, T, K]) with
    M = min(max_persons, number of tracks); M = 0 when nobody was found.
    """
    t_len = len(frames)
    if num_joints is None:
        num_joints = next((f.keypoints.shape[1] for f in frames if len(f)), 17)
    k = num_joints
    tracks: list[dict] = []  # {"kp", "sc", "box", "last", "frames": {t: (kp, sc)}, "total"}
    for t, fp in enumerate(frames):
        n = len(fp)
        if n == 0:
            continue
        boxes = pose_boxes(fp.keypoints, fp.scores, kp_thr)
        live = [i for i, tr in enumerate(tracks) if t - tr["last"] <= max_gap]
        assigned = {}
        if live:
            ious = box_iou(np.stack([tracks[i]["box"] for i in live]), boxes)
            cost = np.full((len(live), n), _INF)
            for a, ti in enumerate(live):
                tr = tracks[ti]
                b = tr["box"]
                scale = float(np.hypot(b[2] - b[0], b[3] - b[1]))
                for p in range(n):
                    d = _keypoint_distance(tr["kp"], tr["sc"], fp.keypoints[p], fp.scores[p],
                                           scale, kp_thr)
                    if ious[a, p] >= min_iou or d <= max_dist:
                        cost[a, p] = (1.0 - ious[a, p]) + dist_weight * min(d, 10.0)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] < _INF:
                    assigned[c] = live[r]
        for p in range(n):
            kp, sc = fp.keypoints[p], fp.scores[p]
            if p in assigned:
                tr = tracks[assigned[p]]
            else:
                tr = {"frames": {}, "total": 0.0}
                tracks.append(tr)
            tr.update(kp=kp, sc=sc, box=boxes[p], last=t)
            tr["frames"][t] = (kp, sc)
            tr["total"] += float(np.mean(sc))
    order = sorted(range(len(tracks)), key=lambda i: -tracks[i]["total"])[:max(0, max_persons)]
    m = len(order)
    keypoints = np.zeros((m, t_len, k, 2), np.float32)
    scores = np.zeros((m, t_len, k), np.float32)
    for slot, ti in enumerate(order):
        for t, (kp, sc) in tracks[ti]["frames"].items():
            keypoints[slot, t] = kp
            scores[slot, t] = sc
    return keypoints, scores
