"""GCN inputs: joint coordinates as arrays ``[M, T, V, C]``, and the modalities made from them.

The graph models (ST-GCN, MS-G3D, DualHead-Net) read coordinates, not heatmaps. Each step here
is a small function on arrays; :class:`heatvol.data.SkeletonDataset` chains them::

    x = normalize_2d(keypoints, scores, img_shape)      # 2D: [M, T, V, 3] (x, y, score)
    x = center_3d(keypoints, scores, layout.center)     # 3D: [M, T, V, 3] (x, y, z)
    x = align_3d(x, valid_mask(keypoints, scores), layout)   # 3D, optional: canonical view
    x = random_scale(random_rotate(x, rng, 0.3), rng, 0.1)   # training only
    x = to_modality(x, valid_mask(keypoints, scores), "bone", layout, has_score=True)
    x = x[:, uniform_sample_indices(...)]               # clip_len frames

Conventions (pyskl's, which the official MS-G3D / DualHead-Net code shares):

- A missing joint (score <= 0 or a non-finite coordinate) is all zeros, score included.
- 2D: ``(x, y)`` maps the image to [-1, 1] (``2 x / W - 1``), the score is the third channel.
- 3D: coordinates are centred on the body-centre joint of the first person, at the first frame
  where it is present (one offset per sequence, as pyskl's ``PreNormalize3D``). Optionally
  (:func:`align_3d`) the sequence is then turned to one canonical view, after the last two
  steps of MS-G3D's ``pre_normalization``.
- Bones: ``bone[v] = joint[v] - joint[parent(v)]`` (the root is its own parent: 0); motion:
  ``m[t] = x[t + 1] - x[t]``, ``m[T - 1] = 0``. With a score channel, the third channel of a
  bone / a motion is the mean score of its two joints / frames (pyskl). A bone or a motion
  with a missing end is zero.
- Motion is taken between consecutive frames of the whole sequence, before frame sampling
  (pyskl's ``GenSkeFeat`` precedes ``UniformSample``).
"""

from __future__ import annotations

import numpy as np

from .layouts import Layout, layout as get_layout
from .transforms import valid_mask

__all__ = ["MODALITIES", "normalize_2d", "center_3d", "align_3d", "rotation_onto",
           "random_rotate", "random_scale", "flip_skeleton", "bone_presence", "to_bone",
           "to_motion", "to_modality"]

MODALITIES = ("joint", "bone", "joint-motion", "bone-motion")


def normalize_2d(keypoints: np.ndarray, scores: np.ndarray,
                 img_shape: tuple[int, int]) -> np.ndarray:
    """2D pixels to GCN input: [M, T, V, 2] + [M, T, V] -> [M, T, V, 3] float32.

    ``x' = 2 x / W - 1``, ``y' = 2 y / H - 1`` (the image spans [-1, 1]); channel 2 is the
    score. Missing joints are zero in all three channels.
    """
    h, w = (float(v) for v in img_shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"image shape must be positive (H, W), got {img_shape}")
    valid = valid_mask(keypoints, scores)
    half = np.array([w / 2, h / 2])
    with np.errstate(over="ignore", invalid="ignore"):
        xy = (keypoints.astype(np.float64) - half) / half
    out = np.zeros(keypoints.shape[:3] + (3,), np.float32)
    out[..., :2] = np.where(valid[..., None], xy, 0)
    out[..., 2] = np.where(valid, scores, 0)
    return out


def center_3d(keypoints: np.ndarray, scores: np.ndarray, center: int) -> np.ndarray:
    """3D coordinates centred on the body: [M, T, V, 3] + [M, T, V] -> [M, T, V, 3] float32.

    Every person is shifted by one offset: the ``center`` joint of person 0 at the first
    frame where it is present (no shift when it never is). Missing joints are zero.
    """
    valid = valid_mask(keypoints, scores)
    present = np.flatnonzero(valid[0, :, center]) if len(valid) else np.zeros(0, int)
    origin = keypoints[0, present[0], center].astype(np.float64) if len(present) else 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        out = keypoints.astype(np.float64) - origin
    return np.where(valid[..., None], out, 0).astype(np.float32)


def rotation_onto(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 rotation that turns direction ``v`` onto ``target``: by the angle between them,
    about ``v x target`` (MS-G3D's ``rotation_matrix(cross(v, t), angle_between(v, t))``).

    Identity when ``v`` is (near) zero or already along ``target``; when it points the
    opposite way, a half turn about an axis perpendicular to it (MS-G3D returns the identity
    there, leaving that rare sequence upside down).
    """
    v, t = np.asarray(v, np.float64), np.asarray(target, np.float64)
    nv, nt = np.linalg.norm(v), np.linalg.norm(t)
    if nv < 1e-6 or nt < 1e-12:
        return np.eye(3)
    v, t = v / nv, t / nt
    cos = float(np.clip(v @ t, -1.0, 1.0))
    axis = np.cross(v, t)
    sin = float(np.linalg.norm(axis))
    if sin < 1e-6:
        if cos > 0:
            return np.eye(3)
        axis = np.cross(v, np.eye(3)[np.argmin(np.abs(v))])  # any axis perpendicular to v
        sin, cos = 0.0, -1.0
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + sin * k + (1 - cos) * (k @ k)  # Rodrigues


def align_3d(x: np.ndarray, present: np.ndarray, layout: str | Layout) -> np.ndarray:
    """Turn a centred 3D sequence to one canonical view: [M, T, V, 3] -> same, float32.

    After MS-G3D's ``pre_normalization`` (steps 3-4): at the first frame where person 0 has
    both ends of the layout's spine and shoulder line (``present``: [M, T, V] bool, the joints
    that were seen; the centre joint is zero where it was the origin, so zeros cannot tell),
    rotate every joint of every person and frame so that the spine (bottom -> top) points
    along +z, then about z so that the shoulder line (right - left) points along +x in the
    ground plane. A camera looking from another side sees the same numbers, which is what
    cross-view recognition needs. Missing (all-zero) joints stay zero; without such a frame
    the input is returned as is.

    The second turn is about z only, where MS-G3D turns about ``shoulders x (+x)``: theirs
    also tilts the spine off +z when the shoulders are not square to it, and when the body
    faces away (shoulders near -x) the axis of its half turn is set by noise and can put the
    body upside down.
    """
    lay = get_layout(layout)
    if lay.spine is None:
        raise ValueError(f"layout {lay.name} has no spine / shoulder joints to align a view by")
    frames = np.flatnonzero(present[0][:, list(lay.spine + lay.shoulders)].all(axis=-1)
                            if len(present) else np.zeros(0, bool))
    if not len(frames):
        return x.astype(np.float32, copy=True)
    pose = x[0, frames[0]].astype(np.float64)
    (bottom, top), (right, left) = lay.spine, lay.shoulders
    to_z = rotation_onto(pose[top] - pose[bottom], [0.0, 0.0, 1.0])
    shoulders = to_z @ (pose[right] - pose[left])
    to_x = _rotation(np.array([0.0, 0.0, -np.arctan2(shoulders[1], shoulders[0])]))
    return (x.astype(np.float64) @ (to_x @ to_z).T).astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix for angles about x, y, z (3D: R = Rz Ry Rx) or one angle (2D)."""
    if len(angles) == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rotate(x: np.ndarray, rng: np.random.Generator, max_angle, *,
                  dims: int) -> np.ndarray:
    """Rotate the coordinates by random angles in [-max_angle, max_angle] radians: one in the
    image plane (``dims=2``) or one about each of x, y, z (``dims=3``; ``max_angle`` may be
    three limits, e.g. ``(1.0, 1.0, 0)`` to turn the camera around the body but not tilt it
    sideways), the same for every person and frame. x: [M, T, V, C] with C >= dims; channels
    past ``dims`` (the score) and missing (all-zero) joints are unchanged."""
    limits = np.broadcast_to(np.asarray(max_angle, np.float64), (1 if dims == 2 else 3,))
    angles = rng.uniform(-limits, limits)
    out = x.copy()
    out[..., :dims] = (x[..., :dims].astype(np.float64) @ _rotation(angles).T).astype(np.float32)
    return out


def random_scale(x: np.ndarray, rng: np.random.Generator, max_scale: float, *,
                 dims: int) -> np.ndarray:
    """Scale each coordinate axis by a random factor in [1 - max_scale, 1 + max_scale].
    x: [M, T, V, C]; channels past ``dims`` are unchanged."""
    factors = rng.uniform(1 - max_scale, 1 + max_scale, size=dims).astype(np.float32)
    out = x.copy()
    out[..., :dims] *= factors
    return out


def flip_skeleton(x: np.ndarray, layout: str | Layout) -> np.ndarray:
    """Mirror left and right: negate the first coordinate (x, centred on 0) and swap the
    layout's left/right joints. [M, T, V, C] -> same; missing joints stay zero."""
    out = x[:, :, get_layout(layout).flip_index()].copy()
    out[..., 0] *= -1
    out[..., 0] += 0.0  # no -0.0: flipped zeros equal unflipped ones bit for bit
    return out


def bone_presence(present: np.ndarray, layout: str | Layout) -> np.ndarray:
    """[M, T, V] bool: a bone is present where both of its joints are (the root: its joint)."""
    lay = get_layout(layout)
    child = np.array([c for c, _ in lay.bones])
    parent = np.array([p for _, p in lay.bones])
    out = np.zeros_like(present)
    out[..., child] = present[..., child] & present[..., parent]
    return out


def to_bone(x: np.ndarray, present: np.ndarray, layout: str | Layout, *,
            has_score: bool) -> np.ndarray:
    """Bones from joints: [M, T, V, C] + present [M, T, V] bool -> [M, T, V, C] float32 (see
    the module docstring)."""
    lay = get_layout(layout)
    child = np.array([c for c, _ in lay.bones])
    parent = np.array([p for _, p in lay.bones])
    out = np.zeros_like(x)
    out[..., child, :] = x[..., child, :] - x[..., parent, :]
    if has_score:
        out[..., child, 2] = (x[..., child, 2] + x[..., parent, 2]) / 2
    out *= bone_presence(present, lay)[..., None]
    return out


def to_motion(x: np.ndarray, present: np.ndarray, *, has_score: bool) -> np.ndarray:
    """Motion over time: [M, T, V, C] + present [M, T, V] bool -> [M, T, V, C] float32,
    ``m[t] = x[t+1] - x[t]``, the last frame zero (see the module docstring)."""
    both = present[:, 1:] & present[:, :-1]
    out = np.zeros_like(x)
    out[:, :-1] = x[:, 1:] - x[:, :-1]
    if has_score:
        out[:, :-1, :, 2] = (x[:, 1:, :, 2] + x[:, :-1, :, 2]) / 2
    out[:, :-1] *= both[..., None]
    return out


def to_modality(x: np.ndarray, present: np.ndarray, modality: str, layout: str | Layout, *,
                has_score: bool) -> np.ndarray:
    """``joint`` (x itself), ``bone``, ``joint-motion`` or ``bone-motion`` of joints x
    [M, T, V, C] whose ``present`` [M, T, V] joints were seen. The mask is passed, not read
    from zeros, because a 3D centre joint is legitimately zero where it was the origin."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    if modality.startswith("bone"):
        x = to_bone(x, present, layout, has_score=has_score)
        present = bone_presence(present, layout)
    if modality.endswith("motion"):
        x = to_motion(x, present, has_score=has_score)
    return x
