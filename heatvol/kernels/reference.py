"""Plain NumPy reference renderer: the test oracle for every pseudo-heatmap kernel.

This is a line-by-line transcription of pyskl's ``GeneratePoseTarget``
(``generate_a_heatmap`` / ``generate_a_limb_heatmap``): the same Python loops, the same
NumPy expressions and therefore the same dtypes (float32 coordinates, a Python-float sigma
that NumPy 2 casts to float32 inside float32 expressions, the limb patch promoted to float64
by pyskl's int64 blend weights). It is slow (one NumPy call chain per point) and exists to be
obviously right, not fast. See ``docs/kernels.md``.

Deliberate deviations from pyskl, shared by every backend:

- A joint is *missing* (never drawn) when its score is not a finite number >= ``EPS``, or when
  a coordinate is not finite or has magnitude >= ``COORD_LIMIT`` (2**60 px). pyskl crashes on
  NaN/inf coordinates and writes NaN for limbs whose float32 arithmetic overflows; a point
  that far off the frame has an empty window anyway, so for joints nothing else changes.
- The missing test always uses the score, even with ``use_score=False`` (pyskl then draws
  zero-score joints with value 1). Drawn values are ``score`` (used as is, also above 1) or
  1.0 when ``use_score=False``.
- pyskl blends the three limb distance cases with 0/1 weights (``a*d2_start + b*d2_end +
  seg*d2_line``); here they are selected with ``np.where``. Both give the same float64 numbers
  whenever the inputs are finite, which the missing rule guarantees; the blend would turn an
  unused infinite candidate into NaN.
"""

from __future__ import annotations

import math

import numpy as np

from .constants import COORD_LIMIT, EPS

__all__ = ["EPS", "COORD_LIMIT", "render_joints_reference", "render_limbs_reference",
           "quantize_uint8", "point_is_drawn"]


def point_is_drawn(x, y, score) -> bool:
    """True when a joint at (x, y) with ``score`` takes part in rendering (see module notes)."""
    return (math.isfinite(score) and score >= EPS
            and abs(float(x)) < COORD_LIMIT and abs(float(y)) < COORD_LIMIT)


def _draw_point(plane: np.ndarray, center: np.ndarray, value: np.float32, sigma: float) -> None:
    """pyskl ``generate_a_heatmap`` for one point: max-merge its Gaussian into ``plane``.

    plane: float32 [H, W], modified in place. center: float32 [2] (x, y). value: np.float32.
    sigma: Python float, so that ``mu - 3 * sigma`` stays float32 as in pyskl under NumPy 2.
    """
    img_h, img_w = plane.shape
    mu_x, mu_y = center[0], center[1]
    # int() truncates toward zero: mu_x = -2.5 gives ed_x = int(-0.7) + 1 = 1, a 1-px window.
    st_x = max(int(mu_x - 3 * sigma), 0)
    ed_x = min(int(mu_x + 3 * sigma) + 1, img_w)
    st_y = max(int(mu_y - 3 * sigma), 0)
    ed_y = min(int(mu_y + 3 * sigma) + 1, img_h)
    x = np.arange(st_x, ed_x, 1, np.float32)
    y = np.arange(st_y, ed_y, 1, np.float32)
    if not (len(x) and len(y)):
        return
    y = y[:, None]
    patch = np.exp(-((x - mu_x) ** 2 + (y - mu_y) ** 2) / 2 / sigma ** 2)
    patch = patch * value
    plane[st_y:ed_y, st_x:ed_x] = np.maximum(plane[st_y:ed_y, st_x:ed_x], patch)


def _draw_limb(plane: np.ndarray, start: np.ndarray, end: np.ndarray, start_value: np.float32,
               end_value: np.float32, sigma: float) -> None:
    """pyskl ``generate_a_limb_heatmap`` for one limb: max-merge its segment Gaussian.

    plane: float32 [H, W], in place. start, end: float32 [2]. start_value, end_value: the drawn
    values of the two joints (score, or 1 when ``use_score=False``), np.float32.
    """
    img_h, img_w = plane.shape
    value_coeff = min(start_value, end_value)

    min_x, max_x = min(start[0], end[0]), max(start[0], end[0])
    min_y, max_y = min(start[1], end[1]), max(start[1], end[1])
    min_x = max(int(min_x - 3 * sigma), 0)
    max_x = min(int(max_x + 3 * sigma) + 1, img_w)
    min_y = max(int(min_y - 3 * sigma), 0)
    max_y = min(int(max_y + 3 * sigma) + 1, img_h)
    x = np.arange(min_x, max_x, 1, np.float32)
    y = np.arange(min_y, max_y, 1, np.float32)
    if not (len(x) and len(y)):
        return
    y = y[:, None]

    d2_start = (x - start[0]) ** 2 + (y - start[1]) ** 2
    d2_end = (x - end[0]) ** 2 + (y - end[1]) ** 2
    d2_ab = (start[0] - end[0]) ** 2 + (start[1] - end[1]) ** 2
    if d2_ab < 1:
        # pyskl: a limb shorter than 1 px is joint a's point Gaussian with a's OWN value.
        _draw_point(plane, start, start_value, sigma)
        return

    coeff = (d2_start - d2_end + d2_ab) / 2. / d2_ab
    a_dominate = coeff <= 0
    b_dominate = coeff >= 1
    projection_x = start[0] + coeff * (end[0] - start[0])
    projection_y = start[1] + coeff * (end[1] - start[1])
    d2_line = (x - projection_x) ** 2 + (y - projection_y) ** 2
    # pyskl's blend multiplies d2_line by an int64 weight, which promotes the patch to float64;
    # keep that so the reference reproduces pyskl's numbers exactly.
    d2_seg = np.where(a_dominate, d2_start, np.where(b_dominate, d2_end, d2_line)).astype(np.float64)
    patch = np.exp(-d2_seg / 2. / sigma ** 2)
    patch = patch * value_coeff
    plane[min_y:max_y, min_x:max_x] = np.maximum(plane[min_y:max_y, min_x:max_x], patch)


def _check_inputs(keypoints, scores, size, sigma):
    keypoints = np.asarray(keypoints, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if keypoints.ndim != 4 or keypoints.shape[-1] != 2 or scores.shape != keypoints.shape[:-1]:
        raise ValueError(f"expected keypoints [M,T,K,2] and scores [M,T,K]; got "
                         f"{keypoints.shape} and {scores.shape}")
    height, width = (size, size) if np.isscalar(size) else size
    return keypoints, scores, int(height), int(width), float(sigma)


def render_joints_reference(keypoints, scores, size, sigma=0.6, use_score=True) -> np.ndarray:
    """Joint pseudo-heatmaps, the pyskl way.

    keypoints: float32 [M, T, K, 2] pixel (x, y); pixel (i, j) sits at x=j, y=i.
    scores: float32 [M, T, K]. size: (H, W) or int. sigma: Gaussian std in px.
    Returns float32 [K, T, H, W]; persons merged by max.
    """
    keypoints, scores, height, width, sigma = _check_inputs(keypoints, scores, size, sigma)
    num_persons, num_frames, num_joints, _ = keypoints.shape
    volume = np.zeros((num_joints, num_frames, height, width), np.float32)
    for t in range(num_frames):
        for k in range(num_joints):
            for m in range(num_persons):
                x, y = keypoints[m, t, k]
                score = scores[m, t, k]
                if not point_is_drawn(x, y, score):
                    continue
                value = score if use_score else np.float32(1.0)
                _draw_point(volume[k, t], keypoints[m, t, k], value, sigma)
    return volume


def render_limbs_reference(keypoints, scores, limbs, size, sigma=0.6, use_score=True) -> np.ndarray:
    """Limb pseudo-heatmaps, the pyskl way.

    keypoints: float32 [M, T, K, 2]; scores: float32 [M, T, K]; limbs: sequence of L (a, b)
    joint index pairs. Returns float32 [L, T, H, W]; persons merged by max.
    """
    keypoints, scores, height, width, sigma = _check_inputs(keypoints, scores, size, sigma)
    num_persons, num_frames, _, _ = keypoints.shape
    volume = np.zeros((len(limbs), num_frames, height, width), np.float32)
    for t in range(num_frames):
        for channel, (a, b) in enumerate(limbs):
            for m in range(num_persons):
                start, end = keypoints[m, t, a], keypoints[m, t, b]
                score_a, score_b = scores[m, t, a], scores[m, t, b]
                if not (point_is_drawn(start[0], start[1], score_a)
                        and point_is_drawn(end[0], end[1], score_b)):
                    continue
                one = np.float32(1.0)
                value_a, value_b = (score_a, score_b) if use_score else (one, one)
                _draw_limb(volume[channel, t], start, end, value_a, value_b, sigma)
    return volume


def quantize_uint8(volume: np.ndarray) -> np.ndarray:
    """float32 heatmap -> uint8: ``floor(v * 255 + 0.5)`` in float32 (round half up), clipped
    to [0, 255]. The uint8 output of every backend equals this applied to its float32 output."""
    scaled = np.floor(volume.astype(np.float32) * np.float32(255.0) + np.float32(0.5))
    return np.clip(scaled, 0, 255).astype(np.uint8)
