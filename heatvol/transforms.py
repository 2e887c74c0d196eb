"""Keypoint transforms for PoseC3D-style training: sampling, cropping, resizing, flipping.

Everything here works on keypoint arrays, never on images: a :class:`Clip` holds
``keypoints`` ([M, T, K, 2] float32, pixels, x then y), ``scores`` ([M, T, K] float32) and the
``img_shape`` (H, W) of the (virtual) image those pixels live in. The renderer
(:mod:`heatvol.render`) turns a clip into a [K or L, T, H, W] volume afterwards.

Style (torchvision transforms v2): small functions that each do one thing, plus callable
transform objects with the signature ``transform(clip, rng)`` that :class:`Compose` chains.
Randomness always comes from an explicit ``rng: np.random.Generator``; nothing here reads or
reseeds the global NumPy RNG (pyskl's test-time sampling reseeds it: pitfall 6).

Missing joints
--------------
A joint is *valid* when its score is > 0 and both its coordinates are finite; every other
joint is *missing* (score 0, negative or NaN, or a NaN/inf coordinate). The references mix
"zero coordinates = missing" and "zero score = missing" (pitfall 4) and their crop shifts
the (0, 0) placeholders too; here every transform follows one rule:

- missing joints keep their coordinates bit for bit and their scores as they were, so no
  transform can move a placeholder into the picture or make it valid;
- valid joints' scores are never changed (geometry only touches coordinates);
- a flip permutes joints left <-> right, so a missing joint moves to its mirror slot, still
  missing.

Inputs are never mutated. Functions that change nothing may return the input clip itself;
treat clip arrays as read-only.

PoseC3D pipelines (pyskl configs)
---------------------------------
train: ``UniformSampleFrames(48) -> PoseDecode -> PoseCompact(hw_ratio=1, allow_imgpad=True)
-> Resize((-1, 64)) -> RandomResizedCrop(area_range=(0.56, 1.0)) -> Resize((56, 56),
keep_ratio=False) -> Flip(0.5)``; test: ``UniformSampleFrames(48, num_clips=10, test_mode)
-> PoseDecode -> PoseCompact -> Resize((64, 64), keep_ratio=False)`` and the flip happens on
the rendered volume (``double=True``), here :func:`flip_volume`. See
:func:`train_pipeline` and :func:`test_pipeline`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .layouts import Layout, layout as get_layout

__all__ = [
    "Clip", "valid_mask",
    "uniform_sample_indices", "take_frames", "clips_first",
    "subject_box", "subject_crop", "crop",
    "resize", "short_edge_size", "resize_short_edge",
    "random_resized_crop_box", "random_resized_crop",
    "flip", "random_flip", "flip_volume",
    "Transform", "Compose", "UniformSample", "SubjectCrop", "Crop", "Resize", "ResizeShortEdge",
    "RandomResizedCrop", "Flip", "RandomFlip",
    "train_pipeline", "test_pipeline",
]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Clip:
    """Keypoints of M persons over T frames, in pixels of an ``img_shape`` (H, W) image.

    Attributes:
        keypoints: [M, T, K, 2] float32, (x, y) in pixels; x indexes W, y indexes H.
        scores: [M, T, K] float32 confidences; a joint is valid iff score > 0 and both
            coordinates are finite (see the module docstring).
        img_shape: (H, W) as Python ints. May describe a box larger than, or offset from,
            the original frame (PoseCompact pads past the image).

    Arrays are converted to float32 on construction (without copying when they already are).
    ``eq=False``: arrays do not compare with ``==``; compare fields explicitly.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    img_shape: tuple[int, int]

    def __post_init__(self):
        keypoints = np.asarray(self.keypoints, dtype=np.float32)
        scores = np.asarray(self.scores, dtype=np.float32)
        if keypoints.ndim != 4 or keypoints.shape[-1] != 2:
            raise ValueError(f"keypoints must be [M, T, K, 2], got shape {keypoints.shape}")
        if scores.shape != keypoints.shape[:3]:
            raise ValueError(f"scores must be [M, T, K] = {keypoints.shape[:3]}, "
                             f"got shape {scores.shape}")
        if len(self.img_shape) != 2:
            raise ValueError(f"img_shape must be (H, W), got {self.img_shape!r}")
        height, width = (int(v) for v in self.img_shape)
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "img_shape", (height, width))

    @property
    def num_persons(self) -> int:
        return self.keypoints.shape[0]

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[1]

    @property
    def num_joints(self) -> int:
        return self.keypoints.shape[2]

    def valid(self) -> np.ndarray:
        """[M, T, K] bool: score > 0 and both coordinates finite."""
        return valid_mask(self.keypoints, self.scores)

    def replace(self, **changes) -> "Clip":
        """A new clip with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        m, t, k = self.scores.shape
        return f"Clip(M={m}, T={t}, K={k}, img_shape={self.img_shape})"


def valid_mask(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[M, T, K] bool validity of joints: ``score > 0`` (NaN compares False) and finite x, y."""
    return (scores > 0) & np.isfinite(keypoints).all(axis=-1)


def _map_valid(clip: Clip, scale_xy, offset_xy, img_shape) -> Clip:
    """Apply ``xy * scale + offset`` to valid joints only; missing joints keep their bits.

    Computed in float64 and rounded once to float32, so chains of crops and resizes stay
    as close to the exact affine map as float32 storage allows.
    """
    valid = clip.valid()
    # Missing joints (NaN/inf, huge placeholders) go through the arithmetic too before
    # np.where discards them; their overflow/invalid warnings are noise.
    with np.errstate(over="ignore", invalid="ignore"):
        mapped = (clip.keypoints.astype(np.float64) * np.asarray(scale_xy, dtype=np.float64)
                  + np.asarray(offset_xy, dtype=np.float64)).astype(np.float32)
    keypoints = np.where(valid[..., None], mapped, clip.keypoints)
    return Clip(keypoints, clip.scores.copy(), img_shape)


def check_positive_shape(img_shape, what: str):
    """Raise ValueError naming ``what`` unless ``img_shape`` (H, W) is positive."""
    if img_shape[0] <= 0 or img_shape[1] <= 0:
        raise ValueError(f"{what}: image shape must be positive (H, W), got {img_shape}")


# --------------------------------------------------------------------------------------------
# Temporal sampling
# --------------------------------------------------------------------------------------------

def _sample_one_clip(num_frames: int, clip_len: int, rng: np.random.Generator) -> np.ndarray:
    """The middle and long cases of UniformSampleFrames (same in train and test mode)."""
    if num_frames < 2 * clip_len:
        # Spread n - clip_len extra frames as +1 gaps over clip_len + 1 slots; the last slot
        # is a gap after the final frame, which is why offset[:-1] is used.
        gap_slots = rng.choice(clip_len + 1, num_frames - clip_len, replace=False)
        gaps = np.zeros(clip_len + 1, dtype=np.int64)
        gaps[gap_slots] = 1
        return np.arange(clip_len, dtype=np.int64) + np.cumsum(gaps)[:-1]
    # One random frame from each of clip_len near-equal segments [bids[i], bids[i + 1]).
    bids = np.array([i * num_frames // clip_len for i in range(clip_len + 1)], dtype=np.int64)
    return bids[:-1] + rng.integers(np.diff(bids))


def uniform_sample_indices(num_frames: int, clip_len: int, *, num_clips: int = 1,
                           train: bool = True, rng: np.random.Generator | None = None,
                           seed: int = 255) -> np.ndarray:
    """Frame indices of PoseC3D's ``UniformSampleFrames``.

    Args:
        num_frames: n, frames in the video (>= 1).
        clip_len: frames per sampled clip.
        num_clips: clips to sample; train mode takes exactly 1.
        train: random sampling from ``rng`` (train) or deterministic sampling (test).
        rng: the generator for train mode (required there); ignored in test mode.
        seed: test mode draws from a fresh ``np.random.default_rng(seed)``, so results are
            reproducible and the global RNG is neither read nor reseeded (pyskl reseeds it).

    Cases, per clip (n = num_frames, L = clip_len):

    - n < L: train: a random start in [0, n) and ``arange(start, start + L)``; test: start
      ``i`` if n < num_clips else ``i * n // num_clips`` for clip i. Indices wrap (loop).
    - L <= n < 2L: ``arange(L)`` plus the cumsum of n - L "+1" gaps placed without
      replacement among L + 1 slots (drop the last).
    - n >= 2L: segments ``[i*n//L, (i+1)*n//L)``, one random frame from each.

    Test mode draws the middle and long cases like train, from the seeded local generator,
    clips in order.

    Returns:
        int64 [num_clips * clip_len], all in [0, n); clip c occupies
        ``[c * clip_len, (c + 1) * clip_len)``.
    """
    num_frames, clip_len, num_clips = int(num_frames), int(clip_len), int(num_clips)
    if num_frames <= 0:
        raise ValueError(f"cannot sample frames from an empty video (num_frames={num_frames})")
    if clip_len <= 0 or num_clips <= 0:
        raise ValueError(f"clip_len and num_clips must be >= 1, got {clip_len}, {num_clips}")

    if train:
        if num_clips != 1:
            raise ValueError(f"train-mode sampling takes num_clips=1, got {num_clips}")
        if rng is None:
            raise ValueError("train-mode sampling needs an explicit rng (np.random.Generator); "
                             "the global NumPy RNG is never used")
        if num_frames < clip_len:
            start = int(rng.integers(0, num_frames))
            indices = np.arange(start, start + clip_len, dtype=np.int64)
        else:
            indices = _sample_one_clip(num_frames, clip_len, rng)
        return np.mod(indices, num_frames).astype(np.int64)

    local_rng = np.random.default_rng(seed)
    clips = []
    for clip_index in range(num_clips):
        if num_frames < clip_len:
            start = clip_index if num_frames < num_clips else clip_index * num_frames // num_clips
            clips.append(np.arange(start, start + clip_len, dtype=np.int64))
        else:
            clips.append(_sample_one_clip(num_frames, clip_len, local_rng))
    return np.mod(np.concatenate(clips), num_frames).astype(np.int64)


def take_frames(clip: Clip, indices) -> Clip:
    """The frames ``indices`` (int [N], values in [0, T)) of every person: [M, N, K, ...]."""
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D integer array, got {indices.dtype} "
                         f"shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= clip.num_frames):
        raise ValueError(f"frame indices must lie in [0, {clip.num_frames}), got "
                         f"[{indices.min()}, {indices.max()}]")
    # Fancy indexing copies, so the result never aliases the input.
    return Clip(clip.keypoints[:, indices], clip.scores[:, indices], clip.img_shape)


def clips_first(array: np.ndarray, num_clips: int) -> np.ndarray:
    """Separate the clips of a multi-clip test sample: ``[M, num_clips * T, ...]`` (clips back
    to back along the frame axis, as :func:`uniform_sample_indices` lays them out) ->
    ``[num_clips, M, T, ...]`` (a view; ``np.ascontiguousarray`` it for the kernels).

    Works for keypoints [M, clips*T, K, 2], scores [M, clips*T, K] and GCN inputs alike."""
    if array.ndim < 2 or num_clips <= 0 or array.shape[1] % num_clips:
        raise ValueError(f"{array.shape[1] if array.ndim >= 2 else 0} frames do not split into "
                         f"{num_clips} equal clips")
    m, frames = array.shape[:2]
    return array.reshape((m, num_clips, frames // num_clips) + array.shape[2:]).swapaxes(0, 1)


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------

def crop(clip: Clip, top: int, left: int, height: int, width: int) -> Clip:
    """Crop to the box of ``height`` x ``width`` pixels at (top, left) (torchvision order).

    Valid joints move by (-left, -top); img_shape becomes (height, width). The box may
    extend past the image (negative top/left, or beyond H/W): keypoints are not clipped,
    the renderer drops what falls outside.
    """
    return _map_valid(clip, (1.0, 1.0), (-float(left), -float(top)), (height, width))


def subject_box(clip: Clip, *, padding: float = 0.25, threshold: float = 10,
                hw_ratio: float | tuple[float, float] | None = 1.0):
    """PoseCompact's box (allow_imgpad=True) as (top, left, height, width), or None to skip.

    One box over all persons and frames, from valid joints only (pyskl uses "coordinate
    != 0", which mistakes a joint on x = 0 for missing and a (0, 0)-scored placeholder for
    a joint). None when there is no valid joint, when the x- or y-extent is < threshold,
    or when the box rounds to an empty one (possible only with threshold <= 0).

    The tight box is padded to (1 + padding) times its size around its centre; with
    ``hw_ratio`` r (float or (r_h, r_w) like pyskl's ``_pair``) the half height becomes
    ``max(r_h * half_w, half_h)`` and then the half width ``max(half_h / r_w, half_w)``.
    Edges are truncated toward zero with ``int()``, as pyskl does (so a negative edge moves
    right/down, not left/up).
    """
    valid = clip.valid()
    if not valid.any():
        return None
    xs = clip.keypoints[..., 0][valid].astype(np.float64)
    ys = clip.keypoints[..., 1][valid].astype(np.float64)
    return box_from_extent(xs.min(), xs.max(), ys.min(), ys.max(), padding=padding,
                           threshold=threshold, hw_ratio=hw_ratio)


def box_from_extent(min_x: float, max_x: float, min_y: float, max_y: float, *,
                    padding: float = 0.25, threshold: float = 10,
                    hw_ratio: float | tuple[float, float] | None = 1.0):
    """:func:`subject_box` from the extent of the valid joints (float64 values): (top, left,
    height, width), or None when an extent is < ``threshold`` or the box rounds to empty."""
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return None

    center_x, center_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w = (max_x - min_x) / 2 * (1 + padding)
    half_h = (max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        ratio_h, ratio_w = (hw_ratio, hw_ratio) if np.isscalar(hw_ratio) else hw_ratio
        half_h = max(ratio_h * half_w, half_h)
        half_w = max(1 / ratio_w * half_h, half_w)

    left, right = int(center_x - half_w), int(center_x + half_w)
    top, bottom = int(center_y - half_h), int(center_y + half_h)
    if right <= left or bottom <= top:
        return None
    return top, left, bottom - top, right - left


def subject_crop(clip: Clip, *, padding: float = 0.25, threshold: float = 10,
                 hw_ratio: float | tuple[float, float] | None = 1.0) -> Clip:
    """PoseCompact: crop to :func:`subject_box`; the clip itself when the box is skipped."""
    box = subject_box(clip, padding=padding, threshold=threshold, hw_ratio=hw_ratio)
    return clip if box is None else crop(clip, *box)


def random_resized_crop_box(img_shape, rng: np.random.Generator, *,
                            area_range=(0.56, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                            max_attempts: int = 10) -> tuple[int, int, int, int]:
    """mmaction2's ``RandomResizedCrop.get_crop_bbox`` as (top, left, height, width).

    Draws ``max_attempts`` log-uniform aspect ratios (w/h) and uniform area fractions at
    once, rounds w = sqrt(area * ar), h = sqrt(area / ar) half-to-even (``np.round``), takes
    the first candidate that fits, with a uniform offset (both ends inclusive); falls back
    to the centred min(H, W) square. Deviation: a candidate that rounds to 0 px is
    rejected (mmaction2 would return an empty box; only possible on tiny images).
    """
    img_h, img_w = int(img_shape[0]), int(img_shape[1])
    check_positive_shape((img_h, img_w), "random_resized_crop")
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"area_range must satisfy 0 < lo <= hi <= 1, got {area_range}")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"aspect_ratio_range must satisfy 0 < lo <= hi, got {aspect_ratio_range}")

    area = img_h * img_w
    log_lo, log_hi = math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1])
    aspect_ratios = np.exp(rng.uniform(log_lo, log_hi, size=max_attempts))
    target_areas = rng.uniform(area_range[0], area_range[1], size=max_attempts) * area
    crop_ws = np.round(np.sqrt(target_areas * aspect_ratios)).astype(np.int64)
    crop_hs = np.round(np.sqrt(target_areas / aspect_ratios)).astype(np.int64)
    for crop_w, crop_h in zip(crop_ws.tolist(), crop_hs.tolist()):
        if 0 < crop_h <= img_h and 0 < crop_w <= img_w:
            left = int(rng.integers(0, img_w - crop_w, endpoint=True))
            top = int(rng.integers(0, img_h - crop_h, endpoint=True))
            return top, left, crop_h, crop_w

    side = min(img_h, img_w)
    return (img_h - side) // 2, (img_w - side) // 2, side, side


def random_resized_crop(clip: Clip, rng: np.random.Generator, *, area_range=(0.56, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts: int = 10) -> Clip:
    """mmaction2's RandomResizedCrop on keypoints: crop to :func:`random_resized_crop_box`.

    Only valid joints shift by (-left, -top) (mmaction2 shifts the (0, 0) placeholders too);
    img_shape = crop size. Valid joints outside the crop keep their out-of-frame coordinates
    (the renderer clips). Resizing to the network size is a separate :func:`resize`.
    """
    box = random_resized_crop_box(clip.img_shape, rng, area_range=area_range,
                                  aspect_ratio_range=aspect_ratio_range,
                                  max_attempts=max_attempts)
    return crop(clip, *box)


# --------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------

def resize(clip: Clip, size: int | tuple[int, int]) -> Clip:
    """Resize to ``size`` = (H, W) (an int means square) without keeping the aspect ratio.

    PoseC3D's plain scaling: valid keypoints ``*= [new_w / w, new_h / h]``; no half-pixel
    correction, matching the renderer's integer pixel grid.
    Note mmaction2's ``Resize(scale=...)`` takes (w, h); this takes (H, W) like img_shape.
    """
    new_h, new_w = (size, size) if np.isscalar(size) else size
    new_h, new_w = int(new_h), int(new_w)
    check_positive_shape(clip.img_shape, "resize")
    check_positive_shape((new_h, new_w), "resize")
    height, width = clip.img_shape
    return _map_valid(clip, (new_w / width, new_h / height), (0.0, 0.0), (new_h, new_w))


def short_edge_size(img_shape, short: int) -> tuple[int, int]:
    """(H, W) after scaling the short edge to ``short`` with the ratio kept (mmcv's
    ``rescale_size`` with scale (inf, short): each side ``int(side * factor + 0.5)``)."""
    height, width = int(img_shape[0]), int(img_shape[1])
    check_positive_shape((height, width), "resize_short_edge")
    factor = short / min(height, width)
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_short_edge(clip: Clip, short: int = 64) -> Clip:
    """``Resize(scale=(-1, short))``: keep the ratio, short edge = ``short`` pixels."""
    return resize(clip, short_edge_size(clip.img_shape, short))


# --------------------------------------------------------------------------------------------
# Flipping
# --------------------------------------------------------------------------------------------

def flip(clip: Clip, layout: str | Layout) -> Clip:
    """Horizontal flip: x -> (W - 1) - x for valid joints, then swap left/right joints.

    W - 1 - x is the exact mirror of the integer pixel grid the renderer samples (pixel i
    <-> pixel W - 1 - i), so the Gaussians of ``render(flip(clip))`` and of
    ``flip_volume(render(clip))`` sit on the same pixels with the same values. They are not
    equal everywhere: pyskl's window ``[int(x - 3 sigma), int(x + 3 sigma)]`` is not symmetric
    under the mirror (``int()`` truncates), so pixels farther than 3 sigma from a point can be
    in one window and not the other; there the two differ by less than
    ``score * exp(-4.5) ~ 0.011 * score`` (measured: 50 of 50 random clips differ, by up to
    0.0106 * score). The test-time flip is "render, then mirror the array" (pyskl's), which
    ``render_batch(..., flip=True)`` computes exactly. W - 1 - x deliberately differs from
    pyskl's train-time ``Flip`` (x -> W - x), which is one pixel off from its own test-time
    flip of the heatmap array (pitfall 3); with W - 1 - x, train and test augmentation see the
    same mirror up to those window edges.

    Joints are permuted by ``layout.flip_index()`` (``flipped[j] = joints[perm[j]]``) along
    with their scores, so a missing left wrist becomes a missing right wrist.
    """
    lay = get_layout(layout)
    if clip.num_joints != lay.num_joints:
        raise ValueError(f"clip has {clip.num_joints} joints, layout {lay.name!r} has "
                         f"{lay.num_joints}")
    width = clip.img_shape[1]
    mirrored = _map_valid(clip, (-1.0, 1.0), (width - 1.0, 0.0), clip.img_shape)
    perm = np.asarray(lay.flip_index(), dtype=np.int64)
    return Clip(mirrored.keypoints[:, :, perm], mirrored.scores[:, :, perm], clip.img_shape)


def random_flip(clip: Clip, rng: np.random.Generator, layout: str | Layout,
                p: float = 0.5) -> Clip:
    """:func:`flip` with probability ``p`` (one ``rng.random()`` draw); else the clip itself."""
    return flip(clip, layout) if rng.random() < p else clip


_VOLUME_MODES = {"joint": "joint", "joints": "joint", "kp": "joint", "keypoint": "joint",
                 "limb": "limb", "limbs": "limb"}


def flip_volume(volume, layout: str | Layout, mode: str = "joint"):
    """Mirror a rendered volume along W and permute its channels: the test-time flip.

    Args:
        volume: [C, T, H, W] or [B, C, T, H, W], a NumPy array or a torch tensor (kept on
            its device).
        layout: the skeleton layout the volume was rendered with.
        mode: ``"joint"`` (C = K channels, permuted by ``layout.flip_index()``) or
            ``"limb"`` (C = L channels, permuted by ``layout.limb_flip_index()``).

    Returns:
        A new volume of the same shape and dtype with ``out[c, ..., x] = in[perm[c], ...,
        W - 1 - x]``; equal to rendering :func:`flip` of the clip except at window edges (see
        :func:`flip`). ``render_batch(..., flip=True)`` gives the same mirror from the kernels.
    """
    lay = get_layout(layout)
    try:
        kind = _VOLUME_MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be 'joint' or 'limb', got {mode!r}") from None
    perm = lay.flip_index() if kind == "joint" else lay.limb_flip_index()
    ndim = volume.ndim if hasattr(volume, "ndim") else np.ndim(volume)
    if ndim not in (4, 5):
        raise ValueError(f"volume must be [C, T, H, W] or [B, C, T, H, W], got {ndim} dims")
    channels = volume.shape[-4]
    if channels != len(perm):
        raise ValueError(f"{kind} volume of layout {lay.name!r} needs {len(perm)} channels, "
                         f"got {channels}")
    if type(volume).__module__.split(".")[0] == "torch":
        import torch  # only when handed a tensor: keeps torch out of the import path

        index = torch.as_tensor(perm, dtype=torch.long, device=volume.device)
        return volume.index_select(ndim - 4, index).flip(-1)
    volume = np.asarray(volume)
    return np.ascontiguousarray(np.take(volume, perm, axis=-4)[..., ::-1])


# --------------------------------------------------------------------------------------------
# Transform objects
# --------------------------------------------------------------------------------------------

class Transform:
    """A clip -> clip step. Every transform is called as ``transform(clip, rng)``;
    deterministic ones ignore ``rng`` (it may be None), random ones require it."""

    def __call__(self, clip: Clip, rng: np.random.Generator | None = None) -> Clip:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def need_rng(rng, who: str) -> np.random.Generator:
    """``rng``, or a ValueError naming the random transform ``who`` when it is None."""
    if rng is None:
        raise ValueError(f"{who} is random: pass rng=np.random.default_rng(...) "
                         "(the global NumPy RNG is never used)")
    return rng


class Compose(Transform):
    """Apply ``transforms`` in order, handing each the same ``rng``."""

    def __init__(self, transforms: Iterable[Callable[[Clip, np.random.Generator | None], Clip]]):
        self.transforms = list(transforms)

    def __call__(self, clip, rng=None):
        for transform in self.transforms:
            clip = transform(clip, rng)
        return clip

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class UniformSample(Transform):
    """:func:`uniform_sample_indices` over the clip's T frames, then :func:`take_frames`.

    With ``num_clips > 1`` (test mode only) the output holds ``num_clips * clip_len`` frames,
    clips back to back; :func:`clips_first` separates them.
    """

    def __init__(self, clip_len: int, num_clips: int = 1, train: bool = True, seed: int = 255):
        self.clip_len, self.num_clips, self.train, self.seed = clip_len, num_clips, train, seed
        if train and num_clips != 1:
            raise ValueError(f"train-mode sampling takes num_clips=1, got {num_clips}")

    def __call__(self, clip, rng=None):
        if self.train:
            need_rng(rng, "UniformSample(train=True)")
        indices = uniform_sample_indices(clip.num_frames, self.clip_len, num_clips=self.num_clips,
                                         train=self.train, rng=rng, seed=self.seed)
        return take_frames(clip, indices)


class SubjectCrop(Transform):
    """:func:`subject_crop` (PoseCompact with allow_imgpad=True)."""

    def __init__(self, padding: float = 0.25, threshold: float = 10,
                 hw_ratio: float | tuple[float, float] | None = 1.0):
        self.padding, self.threshold, self.hw_ratio = padding, threshold, hw_ratio

    def __call__(self, clip, rng=None):
        return subject_crop(clip, padding=self.padding, threshold=self.threshold,
                            hw_ratio=self.hw_ratio)


class Crop(Transform):
    """:func:`crop` to a fixed (top, left, height, width) box."""

    def __init__(self, top: int, left: int, height: int, width: int):
        self.top, self.left, self.height, self.width = top, left, height, width

    def __call__(self, clip, rng=None):
        return crop(clip, self.top, self.left, self.height, self.width)


class Resize(Transform):
    """:func:`resize` to ``size`` (H, W) or int (square), aspect ratio not kept."""

    def __init__(self, size: int | tuple[int, int]):
        self.size = size

    def __call__(self, clip, rng=None):
        return resize(clip, self.size)


class ResizeShortEdge(Transform):
    """:func:`resize_short_edge`: ``Resize(scale=(-1, short))``."""

    def __init__(self, short: int = 64):
        self.short = short

    def __call__(self, clip, rng=None):
        return resize_short_edge(clip, self.short)


class RandomResizedCrop(Transform):
    """:func:`random_resized_crop` (crop only; follow with :class:`Resize`, as PoseC3D)."""

    def __init__(self, area_range=(0.56, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                 max_attempts: int = 10):
        self.area_range = tuple(area_range)
        self.aspect_ratio_range = tuple(aspect_ratio_range)
        self.max_attempts = max_attempts

    def __call__(self, clip, rng=None):
        return random_resized_crop(clip, need_rng(rng, "RandomResizedCrop"),
                                   area_range=self.area_range,
                                   aspect_ratio_range=self.aspect_ratio_range,
                                   max_attempts=self.max_attempts)


class Flip(Transform):
    """:func:`flip`, always."""

    def __init__(self, layout: str | Layout = "coco17"):
        self.layout = get_layout(layout)

    def __call__(self, clip, rng=None):
        return flip(clip, self.layout)


class RandomFlip(Transform):
    """:func:`random_flip` with probability ``p``."""

    def __init__(self, layout: str | Layout = "coco17", p: float = 0.5):
        self.layout, self.p = get_layout(layout), p

    def __call__(self, clip, rng=None):
        return random_flip(clip, need_rng(rng, "RandomFlip"), self.layout, self.p)


def train_pipeline(clip_len: int = 48, size: int | tuple[int, int] = 56,
                   layout: str | Layout = "coco17",
                   *, short_edge: int = 64, area_range=(0.56, 1.0)) -> Compose:
    """PoseC3D's training pipeline (pyskl configs), up to the renderer.

    UniformSample(clip_len) -> SubjectCrop(padding 0.25, threshold 10, hw_ratio 1)
    -> ResizeShortEdge(64) -> RandomResizedCrop(area 0.56-1) -> Resize(size) (an int is
    square, else (H, W)) -> RandomFlip(layout, 0.5). Output: [M, clip_len, K, 2], img_shape
    (H, W).
    """
    return Compose([
        UniformSample(clip_len, train=True),
        SubjectCrop(padding=0.25, threshold=10, hw_ratio=1.0),
        ResizeShortEdge(short_edge),
        RandomResizedCrop(area_range=area_range),
        Resize(size),
        RandomFlip(layout, p=0.5),
    ])


def test_pipeline(clip_len: int = 48, num_clips: int = 1,
                  size: int | tuple[int, int] = 64) -> Compose:
    """PoseC3D's test pipeline (pyskl configs), up to the renderer; deterministic.

    UniformSample(clip_len, num_clips, test mode) -> SubjectCrop(hw_ratio 1)
    -> Resize(size) (an int is square). Output: [M, num_clips * clip_len, K, 2] (clips back to back;
    :func:`clips_first`), img_shape (size, size). The box is one box over all sampled clips,
    as in pyskl. The test-time flip (``double=True``) is :func:`flip_volume` on the
    rendered volume (``render_batch(..., flip=True)`` computes it in the kernels).
    """
    return Compose([
        UniformSample(clip_len, num_clips=num_clips, train=False),
        SubjectCrop(padding=0.25, threshold=10, hw_ratio=1.0),
        Resize(size),
    ])


# pytest collects module-level callables named test_* when this module is imported into a
# test file's namespace; this one is a factory, not a test.
test_pipeline.__test__ = False
