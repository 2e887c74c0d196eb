"""GCN inputs (heatvol.skeleton, heatvol.data.SkeletonDataset) against plain per-joint loops.

Property tests draw several persons with missing joints (score 0), NaN / inf coordinates and
points far outside the frame.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import heatvol
from heatvol.data import SkeletonDataset
from heatvol.layouts import layout
from heatvol.skeleton import (align_3d, center_3d, flip_skeleton, normalize_2d, random_rotate,
                              random_scale, rotation_onto, to_bone, to_modality, to_motion)

from conftest import make_messy_store, messy_pose

LAYOUTS = ["coco17", "openpose18", "ntu25", "kinect20", "penn13"]


poses = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 9),
                  st.sampled_from(LAYOUTS))


def ref_normalize_2d(kp, sc, img_shape):
    h, w = img_shape
    out = np.zeros(kp.shape[:3] + (3,), np.float64)
    for idx in np.ndindex(*kp.shape[:3]):
        x, y = kp[idx]
        if sc[idx] > 0 and math.isfinite(x) and math.isfinite(y):
            out[idx] = ((x - w / 2) / (w / 2), (y - h / 2) / (h / 2), sc[idx])
    return out


def ref_bone(x, present, lay, has_score):
    out = np.zeros_like(x)
    for m, t in np.ndindex(*x.shape[:2]):
        for child, parent in lay.bones:
            a, b = x[m, t, child], x[m, t, parent]
            if present[m, t, child] and present[m, t, parent]:
                out[m, t, child] = a - b
                if has_score:
                    out[m, t, child, 2] = (a[2] + b[2]) / 2
    return out


def ref_motion(x, present, has_score):
    out = np.zeros_like(x)
    for m, t, v in np.ndindex(*x.shape[:3]):
        if t + 1 == x.shape[1]:
            continue
        a, b = x[m, t + 1, v], x[m, t, v]
        if present[m, t + 1, v] and present[m, t, v]:
            out[m, t, v] = a - b
            if has_score:
                out[m, t, v, 2] = (a[2] + b[2]) / 2
    return out


@settings(max_examples=60, deadline=None)
@given(poses)
def test_normalize_2d_matches_reference(pose):
    seed, m, t, name = pose
    kp, sc = messy_pose(seed, m, t, layout(name).num_joints, 2)
    out = normalize_2d(kp, sc, (48, 64))
    assert out.dtype == np.float32 and out.shape == (m, t, kp.shape[2], 3)
    np.testing.assert_allclose(out, ref_normalize_2d(kp, sc, (48, 64)), rtol=1e-6, atol=1e-6)
    assert np.isfinite(out).all()
    inside = (kp[..., 0] >= 0) & (kp[..., 0] <= 64) & (kp[..., 1] >= 0) & (kp[..., 1] <= 48)
    assert (np.abs(out[..., :2][inside & (sc > 0)]) <= 1 + 1e-6).all()


@settings(max_examples=60, deadline=None)
@given(poses)
def test_center_3d_puts_the_centre_joint_at_the_origin(pose):
    seed, m, t, name = pose
    lay = layout(name)
    kp, sc = messy_pose(seed, m, t, lay.num_joints, 3)
    out = center_3d(kp, sc, lay.center)
    valid = (sc > 0) & np.isfinite(kp).all(-1)
    assert np.isfinite(out).all() and (out[~valid] == 0).all()
    frames = np.flatnonzero(valid[0, :, lay.center])
    origin = kp[0, frames[0], lay.center].astype(np.float64) if len(frames) else 0
    expected = np.where(valid[..., None], kp.astype(np.float64) - origin, 0)
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    if len(frames):
        assert (out[0, frames[0], lay.center] == 0).all()


@settings(max_examples=60, deadline=None)
@given(poses, st.booleans())
def test_bone_and_motion_match_reference(pose, two_d):
    seed, m, t, name = pose
    lay = layout(name)
    kp, sc = messy_pose(seed, m, t, lay.num_joints, 2 if two_d else 3)
    x = normalize_2d(kp, sc, (48, 64)) if two_d else center_3d(kp, sc, lay.center)
    present = (sc > 0) & np.isfinite(kp).all(-1)
    bone = to_bone(x, present, lay, has_score=two_d)
    np.testing.assert_allclose(bone, ref_bone(x, present, lay, two_d), rtol=1e-6, atol=1e-6)
    motion = to_motion(x, present, has_score=two_d)
    np.testing.assert_allclose(motion, ref_motion(x, present, two_d), rtol=1e-6, atol=1e-6)
    bone_present = np.stack([present[..., c] & present[..., p] for c, p in sorted(lay.bones)], -1)
    np.testing.assert_array_equal(to_modality(x, present, "bone-motion", lay, has_score=two_d),
                                  ref_motion(bone, bone_present, two_d))
    assert (to_modality(x, present, "joint", lay, has_score=two_d) == x).all()
    assert (motion[:, -1] == 0).all()


def test_the_3d_origin_joint_has_bones_and_motion():
    """After centring, the centre joint is exactly zero at its first frame yet present: its
    bone and its motion there are not dropped."""
    lay = layout("kinect20")
    kp = np.random.default_rng(0).normal(size=(1, 3, 20, 3)).astype(np.float32)
    sc = np.ones((1, 3, 20), np.float32)
    x = center_3d(kp, sc, lay.center)
    assert (x[0, 0, lay.center] == 0).all()
    present = sc > 0
    parent = dict(lay.bones)[lay.center]
    bone = to_bone(x, present, lay, has_score=False)
    np.testing.assert_allclose(bone[0, 0, lay.center], -x[0, 0, parent])
    motion = to_motion(x, present, has_score=False)
    np.testing.assert_allclose(motion[0, 0, lay.center], x[0, 1, lay.center])
    assert np.abs(motion[0, 0, lay.center]).max() > 0


def test_bone_of_a_hand_made_skeleton():
    lay = layout("penn13")  # joint 1 (left shoulder) hangs from 0 (head)
    x = np.zeros((1, 1, 13, 3), np.float32)
    x[0, 0, 0] = (0.1, -0.5, 0.8)
    x[0, 0, 1] = (0.3, -0.2, 0.4)
    bone = to_bone(x, x[..., 2] > 0, lay, has_score=True)
    np.testing.assert_allclose(bone[0, 0, 1], (0.2, 0.3, 0.6), rtol=1e-6)
    np.testing.assert_allclose(bone[0, 0, 0], (0, 0, 0.8))  # the root: zero vector, its score
    assert (bone[0, 0, 2:] == 0).all()  # missing joints


def test_modality_name_is_checked():
    with pytest.raises(ValueError, match="bone-motion"):
        to_modality(np.zeros((1, 2, 13, 3), np.float32), np.zeros((1, 2, 13), bool), "bones",
                    "penn13", has_score=True)


@settings(max_examples=40, deadline=None)
@given(poses, st.booleans())
def test_rotation_keeps_lengths_and_scores(pose, two_d):
    seed, m, t, name = pose
    lay = layout(name)
    dims = 2 if two_d else 3
    kp, sc = messy_pose(seed, m, t, lay.num_joints, dims)
    x = normalize_2d(kp, sc, (48, 64)) if two_d else center_3d(kp, sc, lay.center)
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore", invalid="ignore"):  # the 1e30 off-frame points
        r = random_rotate(x, rng, 0.5, dims=dims)
    norm = lambda a: np.linalg.norm(a[..., :dims].astype(np.float64), axis=-1)  # noqa: E731
    np.testing.assert_allclose(norm(r), norm(x), rtol=1e-5, atol=1e-5)
    assert (r[..., dims:] == x[..., dims:]).all()
    missing = (x == 0).all(-1)
    assert (r[missing] == 0).all()
    s = random_scale(x, np.random.default_rng(seed), 0.2, dims=dims)
    ratio = s[..., :dims][x[..., :dims] != 0] / x[..., :dims][x[..., :dims] != 0]
    assert ((ratio >= 0.8 - 1e-6) & (ratio <= 1.2 + 1e-6)).all()
    assert (s[..., dims:] == x[..., dims:]).all()


def test_rotation_limits_per_axis():
    x = np.zeros((1, 1, 20, 3), np.float32)
    x[0, 0, :, 2] = 1.0  # points along z: a rotation about z alone leaves them
    r = random_rotate(x, np.random.default_rng(0), (0.0, 0.0, 3.0), dims=3)
    np.testing.assert_allclose(r, x, atol=1e-7)
    assert not np.allclose(random_rotate(x, np.random.default_rng(0), (0.0, 3.0, 0.0), dims=3), x)


@settings(max_examples=40, deadline=None)
@given(poses)
def test_flip_is_a_mirror_and_an_involution(pose):
    seed, m, t, name = pose
    lay = layout(name)
    kp, sc = messy_pose(seed, m, t, lay.num_joints, 2)
    x = normalize_2d(kp, sc, (48, 64))
    f = flip_skeleton(x, lay)
    np.testing.assert_array_equal(flip_skeleton(f, lay), x)
    mirrored = kp.copy()
    mirrored[..., 0] = 64 - kp[..., 0]
    expected = normalize_2d(mirrored[:, :, lay.flip_index()], sc[:, :, lay.flip_index()],
                            (48, 64))
    np.testing.assert_allclose(f, expected, atol=1e-5)


# --------------------------------------------------------------------------- view alignment


def official_rotation_matrix(axis, theta):
    """MS-G3D's data_gen/rotation.py: Euler-Rodrigues, counter-clockwise about ``axis``."""
    if np.abs(axis).sum() < 1e-6 or np.abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis, np.float64) / math.sqrt(np.dot(axis, axis))
    a = math.cos(theta / 2.0)
    b, c, d = -axis * math.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array([[aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
                     [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
                     [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc]])


def official_angle_between(v1, v2):
    v1, v2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return np.arccos(np.clip(np.dot(v1, v2), -1.0, 1.0))


def ref_align(x, present, lay):
    """Joint by joint, at the first frame where person 0 has all four joints: MS-G3D's turn of
    the spine onto +z, then a turn about z that lays the shoulder line along +x."""
    joints = lay.spine + lay.shoulders
    frame = next((t for t in range(x.shape[1]) if all(present[0, t, j] for j in joints)), None)
    out = x.astype(np.float64).copy()
    if frame is None:
        return out
    (bottom, top), (right, left) = lay.spine, lay.shoulders
    spine = out[0, frame, top] - out[0, frame, bottom]
    rot = official_rotation_matrix(np.cross(spine, [0, 0, 1]),
                                   official_angle_between(spine, [0, 0, 1]))
    shoulders = rot @ (out[0, frame, right] - out[0, frame, left])
    rot = official_rotation_matrix([0, 0, 1], -math.atan2(shoulders[1], shoulders[0])) @ rot
    for idx in np.ndindex(*out.shape[:3]):
        out[idx] = rot @ out[idx]
    return out


vectors = st.lists(st.floats(-10, 10), min_size=3, max_size=3).filter(
    lambda v: np.linalg.norm(v) > 1e-3)


@settings(max_examples=80, deadline=None)
@given(vectors, vectors)
def test_rotation_onto_turns_v_onto_target(v, target):
    rot = rotation_onto(v, target)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot @ (np.array(v) / np.linalg.norm(v)),
                               np.array(target) / np.linalg.norm(target), atol=1e-6)


@pytest.mark.parametrize("v", [[0, 0, 2.0], [0, 0, -2.0], [1e-9, 0, -1.0]])
def test_rotation_onto_parallel_and_opposite(v):
    rot = rotation_onto(v, [0, 0, 1])
    np.testing.assert_allclose(rot @ v, [0, 0, np.linalg.norm(v)], atol=1e-6)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(poses.filter(lambda p: layout(p[3]).spine is not None))
def test_align_3d_matches_reference(pose):
    seed, m, t, name = pose
    lay = layout(name)
    kp, sc = messy_pose(seed, m, t, lay.num_joints, 3)
    kp[np.abs(kp) > 1e6] = np.nan  # 1e30 is finite but squares to inf in the reference
    x = center_3d(kp, sc, lay.center)
    present = (sc > 0) & np.isfinite(kp).all(-1)
    out = align_3d(x, present, lay)
    assert out.dtype == np.float32 and out.shape == x.shape and np.isfinite(out).all()
    assert (out[~present] == 0).all()  # missing joints stay zero
    np.testing.assert_allclose(out, ref_align(x, present, lay), rtol=1e-5, atol=1e-4)
    # lengths (bones, distances to the origin) are kept
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["ntu25", "kinect20"]))
def test_align_3d_removes_the_camera_view(seed, name):
    """Seen from any camera (a random rotation), a body aligns to the same numbers: the spine
    along +z, the shoulders along +x in the ground plane, even where they are not square to
    the spine, and facing away from the camera."""
    lay = layout(name)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 5, lay.num_joints, 3))
    x[0, 0, lay.spine[0]] = 0
    x[0, 0, lay.spine[1]] = [0, 0, 0.5]
    x[0, 0, lay.shoulders[0]] = [0.2, 0.3, 0.5]
    x[0, 0, lay.shoulders[1]] = [-0.2, 0.3, 0.4]
    present = np.ones(x.shape[:3], bool)  # the spine's bottom, at the origin, was seen
    np.testing.assert_allclose(align_3d(x.astype(np.float32), present, lay), x, atol=1e-6)
    camera = rotation_onto(rng.normal(size=3), rng.normal(size=3)) @ rotation_onto(
        [1, 0, 0], rng.normal(size=3))
    seen = (x @ camera.T).astype(np.float32)
    np.testing.assert_allclose(align_3d(seen, present, lay), x, atol=1e-5)


def test_align_3d_without_a_complete_frame_and_without_joints():
    lay = layout("kinect20")
    x = np.random.default_rng(0).normal(size=(2, 3, 20, 3)).astype(np.float32)
    present = np.ones(x.shape[:3], bool)
    present[0, :, lay.shoulders[1]] = False  # person 0's left shoulder is never seen
    np.testing.assert_array_equal(align_3d(x, present, lay), x)
    np.testing.assert_array_equal(align_3d(x[:0], present[:0], lay), x[:0])  # nobody
    with pytest.raises(ValueError, match="penn13 has no spine"):
        align_3d(np.ones((1, 2, 13, 3), np.float32), np.ones((1, 2, 13), bool), "penn13")


# --------------------------------------------------------------------------- dataset


@pytest.mark.parametrize("dims", [2, 3])
def test_skeleton_dataset_items(tmp_path, dims):
    store = make_messy_store(tmp_path / "p.h5", dims)
    train = SkeletonDataset(store, store.split("train"), train=True, clip_len=12,
                            modality="bone", max_persons=3, rotate=0.3, scale=0.1, seed=5)
    a, b = train[(2, 1)], train[(2, 1)]
    assert a["skeleton"].shape == (3, 12, 20, 3) and a["skeleton"].dtype == np.float32
    np.testing.assert_array_equal(a["skeleton"], b["skeleton"])  # (seed, epoch, index) fix it
    assert not np.array_equal(a["skeleton"], train[(3, 1)]["skeleton"])
    assert np.isfinite(a["skeleton"]).all() and (a["skeleton"][2] == 0).all()  # padded person
    assert np.abs(a["skeleton"]).max() > 0
    test = SkeletonDataset(store, store.split("test"), train=False, clip_len=12, num_clips=3,
                           flip=True, max_persons=2)
    x = test[0]["skeleton"]
    assert x.shape == (6, 2, 12, 20, 3)
    np.testing.assert_array_equal(x[3:], np.stack([flip_skeleton(c, "kinect20") for c in x[:3]]))


def test_skeleton_dataset_aligns_3d_views(tmp_path):
    store = make_messy_store(tmp_path / "p.h5", 3)
    names = store.split("test")
    plain = SkeletonDataset(store, names, train=False, clip_len=12, max_persons=2)
    aligned = SkeletonDataset(store, names, train=False, clip_len=12, max_persons=2, align=True)
    a, b = plain[0]["skeleton"], aligned[0]["skeleton"]
    assert not np.allclose(a, b)
    with np.errstate(over="ignore"):  # the 1e30 joints of messy_pose
        np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="align needs a 3D store"):
        SkeletonDataset(make_messy_store(tmp_path / "q.h5", 2), names, train=False, clip_len=12,
                        align=True)


def test_skeleton_dataset_of_an_empty_sequence(tmp_path):
    path = tmp_path / "p.h5"
    with heatvol.PoseWriter(path, layout="penn13", classes=["a"], mode="w") as w:
        w.append("empty", np.zeros((0, 5, 13, 2), np.float32), np.zeros((0, 5, 13), np.float32),
                 label=0, img_shape=(10, 10))
    store = heatvol.PoseStore(path, in_memory=True)
    x = SkeletonDataset(store, ["empty"], train=False, clip_len=4, max_persons=2)[0]["skeleton"]
    assert x.shape == (1, 2, 4, 13, 3) and (x == 0).all()
