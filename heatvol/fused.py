"""The keypoint transforms of :mod:`heatvol.transforms` in one compiled pass per sample.

:class:`FusedPipeline` runs a :class:`~heatvol.transforms.Compose` of those transforms and is
equal to it bit for bit (same ``rng`` draws, same keypoints, scores and img_shape); the
composable transforms stay the reference and the public API, this is what the datasets and
``heatvol render`` run (``tests/test_transforms.py`` checks the equality with hypothesis:
missing joints, NaNs, off-frame points, several persons).

Why it is faster: crops, resizes and flips are affine maps of x and y, and frame sampling and
the flip's joint swap are gathers. Instead of each transform building a new clip and
recomputing the valid mask, the boxes and random draws are decided from ``img_shape`` alone,
the maps are collected as (scale, offset) steps, the frame indices and joint permutations are
composed, and one Numba function gathers every joint once and applies every step to the valid
ones (float64 arithmetic rounded to float32 after each step, exactly as the composable
transforms round). :class:`~heatvol.transforms.SubjectCrop`'s box needs the coordinates: a
second compiled function reduces the mapped valid joints to their extent without writing
them. Per training sample that replaces ~40 NumPy calls with two compiled ones.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layouts import layout as get_layout
from .transforms import (Clip, Compose, Crop, Flip, RandomFlip, RandomResizedCrop, Resize,
                         ResizeShortEdge, SubjectCrop, Transform, UniformSample, box_from_extent,
                         check_positive_shape, need_rng, random_resized_crop_box,
                         short_edge_size, uniform_sample_indices)

__all__ = ["FusedPipeline", "FUSED_COORD_LIMIT"]

#: Valid coordinates at or above this magnitude make :class:`FusedPipeline` run the reference
#: (they can overflow float32 between steps, where the step-by-step result is the definition;
#: a pose store holds |c| <= 1e6, so stored data always takes the fused path).
FUSED_COORD_LIMIT = 1e30


@njit(cache=True)
def _is_finite(x, y):
    return math.isfinite(x) and math.isfinite(y)


@njit(cache=True)
def _is_valid(x, y, score):
    """A joint takes part: score > 0 (NaN fails) and both coordinates finite."""
    return score > 0 and _is_finite(x, y)


@njit(cache=True)
def _has_extreme_points(keypoints, scores, limit):
    """Any valid joint (score > 0, both coordinates finite) with a coordinate >= ``limit``."""
    persons, frames, joints, _ = keypoints.shape
    for m in range(persons):
        for t in range(frames):
            for k in range(joints):
                x = keypoints[m, t, k, 0]
                y = keypoints[m, t, k, 1]
                if _is_valid(x, y, scores[m, t, k]) and (abs(x) >= limit or abs(y) >= limit):
                    return True
    return False


@njit(cache=True)
def _map_point(x, y, steps):
    """Apply the (scale_x, scale_y, offset_x, offset_y) rows of float64 ``steps`` [S, 4] to a
    valid float32 point, rounding to float32 after each step as the composable transforms do;
    a point that overflowed at an earlier step stays as it is (it is no longer valid)."""
    for i in range(steps.shape[0]):
        if not _is_finite(x, y):
            break
        x, y = (np.float32(np.float64(x) * steps[i, 0] + steps[i, 2]),
                np.float32(np.float64(y) * steps[i, 1] + steps[i, 3]))
    return x, y


@njit(cache=True)
def _gather_map(keypoints, scores, frames, joints, steps, out_keypoints, out_scores):
    """out[m, t, k] = keypoints[m, frames[t], joints[k]] with ``steps`` applied when valid.

    keypoints: float32 [M, T0, K0, 2]; scores: float32 [M, T0, K0]; frames: int64 [T];
    joints: int64 [K]; steps: float64 [S, 4]; out_keypoints: float32 [M, T, K, 2];
    out_scores: float32 [M, T, K]. Scores and missing joints are copied bit for bit.
    """
    for m in range(keypoints.shape[0]):
        for t in range(frames.size):
            f = frames[t]
            for k in range(joints.size):
                j = joints[k]
                x = keypoints[m, f, j, 0]
                y = keypoints[m, f, j, 1]
                score = scores[m, f, j]
                if _is_valid(x, y, score):
                    x, y = _map_point(x, y, steps)
                out_keypoints[m, t, k, 0] = x
                out_keypoints[m, t, k, 1] = y
                out_scores[m, t, k] = score


@njit(cache=True)
def _mapped_extent(keypoints, scores, frames, steps):
    """(count, min_x, max_x, min_y, max_y) of the valid joints of ``frames`` after ``steps``
    (float64 of the float32 results), without writing them; count 0 when none is valid."""
    count = 0
    min_x = max_x = min_y = max_y = 0.0
    for m in range(keypoints.shape[0]):
        for t in range(frames.size):
            f = frames[t]
            for j in range(keypoints.shape[2]):
                x = keypoints[m, f, j, 0]
                y = keypoints[m, f, j, 1]
                if not _is_valid(x, y, scores[m, f, j]):
                    continue
                x, y = _map_point(x, y, steps)
                if not _is_finite(x, y):  # overflowed to inf on the way
                    continue
                xd, yd = np.float64(x), np.float64(y)
                if count == 0:
                    min_x = max_x = xd
                    min_y = max_y = yd
                else:
                    min_x, max_x = min(min_x, xd), max(max_x, xd)
                    min_y, max_y = min(min_y, yd), max(max_y, yd)
                count += 1
    return count, min_x, max_x, min_y, max_y


class _FusedState:
    """A clip as its source arrays plus what is pending: frame indices, joint permutation,
    affine steps. :meth:`flush` applies them all in one compiled gather."""

    def __init__(self, clip: Clip):
        self._reset(clip.keypoints, clip.scores)
        self.img_shape = clip.img_shape

    def _reset(self, keypoints: np.ndarray, scores: np.ndarray) -> None:
        """Source arrays with nothing pending."""
        self.keypoints, self.scores = keypoints, scores
        self.frames = np.arange(keypoints.shape[1], dtype=np.int64)
        self.joints = np.arange(keypoints.shape[2], dtype=np.int64)
        self.steps: list[tuple[float, float, float, float]] = []
        self.pending = False  # anything to apply beyond the source arrays

    def take(self, indices) -> None:
        self.frames = self.frames[np.asarray(indices, dtype=np.int64)]
        self.pending = True

    def crop(self, top: int, left: int, height: int, width: int) -> None:
        self.steps.append((1.0, 1.0, -float(left), -float(top)))
        self.img_shape = (int(height), int(width))
        self.pending = True

    def resize(self, size) -> None:
        new_h, new_w = (size, size) if np.isscalar(size) else size
        new_h, new_w = int(new_h), int(new_w)
        check_positive_shape(self.img_shape, "resize")
        check_positive_shape((new_h, new_w), "resize")
        height, width = self.img_shape
        self.steps.append((new_w / width, new_h / height, 0.0, 0.0))
        self.img_shape = (new_h, new_w)
        self.pending = True

    def flip(self, layout) -> None:
        lay = get_layout(layout)
        if self.keypoints.shape[2] != lay.num_joints:
            raise ValueError(f"clip has {self.keypoints.shape[2]} joints, layout {lay.name!r} "
                             f"has {lay.num_joints}")
        self.steps.append((-1.0, 1.0, self.img_shape[1] - 1.0, 0.0))
        # flipped[j] = joints[perm[j]], composed with the permutation so far
        self.joints = self.joints[np.asarray(lay.flip_index(), dtype=np.int64)]
        self.pending = True

    def _steps(self) -> np.ndarray:
        return np.array(self.steps, dtype=np.float64).reshape(-1, 4)

    def subject_box(self, transform: SubjectCrop):
        """:func:`~heatvol.transforms.subject_box` of the clip as it stands, not materialised."""
        count, min_x, max_x, min_y, max_y = _mapped_extent(self.keypoints, self.scores,
                                                           self.frames, self._steps())
        if count == 0:
            return None
        return box_from_extent(min_x, max_x, min_y, max_y, padding=transform.padding,
                               threshold=transform.threshold, hw_ratio=transform.hw_ratio)

    def flush(self) -> Clip:
        """The clip as the composable transforms have it."""
        if self.pending:
            persons = self.keypoints.shape[0]
            keypoints = np.empty((persons, self.frames.size, self.joints.size, 2), np.float32)
            scores = np.empty((persons, self.frames.size, self.joints.size), np.float32)
            _gather_map(self.keypoints, self.scores, self.frames, self.joints, self._steps(),
                        keypoints, scores)
            self._reset(keypoints, scores)
        return Clip(self.keypoints, self.scores, self.img_shape)


class FusedPipeline(Transform):
    """A :class:`~heatvol.transforms.Compose` of the transforms of :mod:`heatvol.transforms`,
    applied in one compiled pass per sample and equal to it bit for bit (module docstring).

    A transform this class does not know is applied as composed (the pending steps are applied
    first). Clips with a valid coordinate of magnitude >= :data:`FUSED_COORD_LIMIT` run the
    composable transforms themselves.
    """

    def __init__(self, pipeline: Compose | list[Transform]):
        self.transforms = list(pipeline.transforms if isinstance(pipeline, Compose)
                               else pipeline)

    def __call__(self, clip: Clip, rng: np.random.Generator | None = None) -> Clip:
        if _has_extreme_points(clip.keypoints, clip.scores, FUSED_COORD_LIMIT):
            return Compose(self.transforms)(clip, rng)
        state = _FusedState(clip)
        for transform in self.transforms:
            kind = type(transform)
            if kind is UniformSample:
                if transform.train:
                    need_rng(rng, "UniformSample(train=True)")
                state.take(uniform_sample_indices(
                    state.frames.size, transform.clip_len, num_clips=transform.num_clips,
                    train=transform.train, rng=rng, seed=transform.seed))
            elif kind is SubjectCrop:
                box = state.subject_box(transform)
                if box is not None:
                    state.crop(*box)
            elif kind is Crop:
                state.crop(transform.top, transform.left, transform.height, transform.width)
            elif kind is RandomResizedCrop:
                state.crop(*random_resized_crop_box(
                    state.img_shape, need_rng(rng, "RandomResizedCrop"),
                    area_range=transform.area_range,
                    aspect_ratio_range=transform.aspect_ratio_range,
                    max_attempts=transform.max_attempts))
            elif kind is Resize:
                state.resize(transform.size)
            elif kind is ResizeShortEdge:
                check_positive_shape(state.img_shape, "resize_short_edge")
                state.resize(short_edge_size(state.img_shape, transform.short))
            elif kind in (Flip, RandomFlip):
                if kind is Flip or need_rng(rng, "RandomFlip").random() < transform.p:
                    state.flip(transform.layout)
            else:  # anything else: as composed
                state = _FusedState(transform(state.flush(), rng))
        return state.flush()

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"FusedPipeline([{inner}\n])"
