"""Tests for heatvol.transforms: hand-computed PoseC3D cases plus property tests.

Render-free except for the flip-equivariance test, which needs heatvol.render_volume.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heatvol.fused import FusedPipeline
from heatvol.layouts import layout
from heatvol.transforms import (
    Clip, Compose, Crop, Flip, RandomFlip, RandomResizedCrop, Resize, ResizeShortEdge,
    SubjectCrop, UniformSample, crop, flip, flip_volume, random_flip, random_resized_crop,
    random_resized_crop_box, resize, resize_short_edge, short_edge_size, clips_first,
    subject_box, subject_crop, take_frames, test_pipeline, train_pipeline,
    Transform, uniform_sample_indices, valid_mask,
)

COCO = layout("coco17")
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


def make_clip(points, img_shape=(100, 100), num_joints=None):
    """One person, one frame; ``points`` = [(x, y, score), ...]."""
    arr = np.asarray(points, dtype=np.float32)
    k = len(points) if num_joints is None else num_joints
    kp = np.zeros((1, 1, k, 2), np.float32)
    sc = np.zeros((1, 1, k), np.float32)
    kp[0, 0, :len(points)] = arr[:, :2]
    sc[0, 0, :len(points)] = arr[:, 2]
    return Clip(kp, sc, img_shape)


def bits(a):
    """Bit patterns, so NaN payloads and -0.0 compare exactly."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def global_rng_state():
    state = np.random.get_state()
    return state[1].copy(), state[2]


# --------------------------------------------------------------------------------------------
# Clip
# --------------------------------------------------------------------------------------------

def test_clip_coerces_to_float32_and_validates_shapes():
    clip = Clip(np.zeros((2, 3, 17, 2)), np.zeros((2, 3, 17)), (10.0, 20))
    assert clip.keypoints.dtype == np.float32 and clip.scores.dtype == np.float32
    assert clip.img_shape == (10, 20) and isinstance(clip.img_shape[0], int)
    assert (clip.num_persons, clip.num_frames, clip.num_joints) == (2, 3, 17)
    with pytest.raises(ValueError, match="scores"):
        Clip(np.zeros((2, 3, 17, 2)), np.zeros((2, 3, 16)), (10, 20))
    with pytest.raises(ValueError, match="keypoints"):
        Clip(np.zeros((2, 3, 17, 3)), np.zeros((2, 3, 17)), (10, 20))


def test_valid_mask_uses_score_and_finiteness():
    kp = np.array([[[[0, 0], [1, 2], [np.nan, 3], [4, np.inf], [5, 6], [7, 8]]]], np.float32)
    sc = np.array([[[0.5, 0.5, 0.5, 0.5, 0.0, -1.0]]], np.float32)
    # (0, 0) with a positive score is a real joint (pyskl would call it missing).
    assert valid_mask(kp, sc).tolist() == [[[True, True, False, False, False, False]]]
    sc_nan = sc.copy()
    sc_nan[0, 0, 1] = np.nan
    assert not valid_mask(kp, sc_nan)[0, 0, 1]


# --------------------------------------------------------------------------------------------
# uniform_sample_indices
# --------------------------------------------------------------------------------------------

def test_long_video_segments_n100_l48():
    n, clip_len = 100, 48
    bids = [i * n // clip_len for i in range(clip_len + 1)]
    # Hand-computed segment starts: 100/48 = 2.083 frames per segment.
    assert bids[:6] == [0, 2, 4, 6, 8, 10] and bids[24] == 50 and bids[47] == 97
    assert bids[48] == 100
    seen = [set() for _ in range(clip_len)]
    for seed in range(200):
        inds = uniform_sample_indices(n, clip_len, rng=np.random.default_rng(seed))
        assert inds.dtype == np.int64 and inds.shape == (clip_len,)
        for i, frame in enumerate(inds.tolist()):
            assert bids[i] <= frame < bids[i + 1]
            seen[i].add(frame)
    # Every frame of every segment is reachable: one uniform draw per segment.
    assert all(seen[i] == set(range(bids[i], bids[i + 1])) for i in range(clip_len))


def test_long_video_draw_contract():
    # rng.integers(segment sizes): the same draw as pyskl's np.random.randint(bsize).
    bids = np.array([i * 100 // 48 for i in range(49)])
    expected = bids[:-1] + np.random.default_rng(7).integers(np.diff(bids))
    got = uniform_sample_indices(100, 48, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(got, expected)


def test_short_video_loops_n30_l48():
    starts = set()
    for seed in range(100):
        inds = uniform_sample_indices(30, 48, rng=np.random.default_rng(seed))
        start = int(inds[0])
        starts.add(start)
        np.testing.assert_array_equal(inds, (start + np.arange(48)) % 30)
    assert starts <= set(range(30)) and len(starts) > 15


def test_middle_video_gaps_n60_l48():
    for seed in range(100):
        inds = uniform_sample_indices(60, 48, rng=np.random.default_rng(seed))
        steps = np.diff(inds)
        assert set(steps.tolist()) <= {1, 2}
        assert inds[0] in (0, 1)
        # 12 "+1" gaps over 49 slots; the last slot (after the final frame) is dropped.
        skipped = int(inds[0]) + int((steps == 2).sum())
        assert skipped in (11, 12)
        assert inds[-1] == 47 + skipped and inds[-1] <= 59


def test_middle_video_exactly_clip_len_is_arange():
    np.testing.assert_array_equal(
        uniform_sample_indices(48, 48, rng=np.random.default_rng(0)), np.arange(48))


def test_test_mode_short_video_starts():
    # n=30 >= num_clips=10: clip i starts at i * 30 // 10 = 3i and loops.
    inds = uniform_sample_indices(30, 48, num_clips=10, train=False)
    expected = np.concatenate([(3 * i + np.arange(48)) % 30 for i in range(10)])
    np.testing.assert_array_equal(inds, expected)
    # n=5 < num_clips=10: clip i starts at i.
    inds = uniform_sample_indices(5, 48, num_clips=10, train=False)
    expected = np.concatenate([(i + np.arange(48)) % 5 for i in range(10)])
    np.testing.assert_array_equal(inds, expected)


def test_test_mode_draws_clips_in_order_from_seeded_local_generator():
    local = np.random.default_rng(255)
    bids = np.array([i * 100 // 48 for i in range(49)])
    expected = np.concatenate([bids[:-1] + local.integers(np.diff(bids)) for _ in range(3)])
    np.testing.assert_array_equal(uniform_sample_indices(100, 48, num_clips=3, train=False),
                                  expected)


@pytest.mark.parametrize("n", [1, 7, 30, 48, 60, 95, 100, 1000])
def test_test_mode_is_deterministic_and_ignores_global_rng(n):
    np.random.seed(0)
    first = uniform_sample_indices(n, 48, num_clips=10, train=False)
    np.random.seed(12345)
    state = global_rng_state()
    second = uniform_sample_indices(n, 48, num_clips=10, train=False,
                                    rng=np.random.default_rng(99))  # rng is ignored in test
    np.testing.assert_array_equal(first, second)
    after = global_rng_state()
    np.testing.assert_array_equal(state[0], after[0])  # the global RNG was not touched
    assert state[1] == after[1]
    assert first.shape == (480,) and first.min() >= 0 and first.max() < n
    different_seed = uniform_sample_indices(n, 48, num_clips=10, train=False, seed=1)
    assert different_seed.shape == first.shape


def test_train_mode_same_seed_same_output_and_global_rng_untouched():
    for n in (10, 60, 100, 500):
        a = uniform_sample_indices(n, 48, rng=np.random.default_rng(3))
        np.random.seed(999)
        b = uniform_sample_indices(n, 48, rng=np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)
    state = global_rng_state()
    uniform_sample_indices(500, 48, rng=np.random.default_rng(3))
    after = global_rng_state()
    np.testing.assert_array_equal(state[0], after[0])


def test_sampling_errors():
    with pytest.raises(ValueError, match="empty video"):
        uniform_sample_indices(0, 48, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty video"):
        uniform_sample_indices(0, 48, train=False)
    with pytest.raises(ValueError, match="rng"):
        uniform_sample_indices(100, 48)
    with pytest.raises(ValueError, match="num_clips"):
        uniform_sample_indices(100, 48, num_clips=2, rng=np.random.default_rng(0))


@PROPERTY_SETTINGS
@given(n=st.integers(1, 400), clip_len=st.integers(1, 64), num_clips=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_sampling_indices_in_range(n, clip_len, num_clips, seed):
    train = uniform_sample_indices(n, clip_len, rng=np.random.default_rng(seed))
    test = uniform_sample_indices(n, clip_len, num_clips=num_clips, train=False)
    for inds, length in ((train, clip_len), (test, clip_len * num_clips)):
        assert inds.dtype == np.int64 and inds.shape == (length,)
        assert inds.min() >= 0 and inds.max() < n
    if n >= clip_len:  # no looping: strictly increasing within each clip
        assert (np.diff(train) > 0).all()
        assert (np.diff(test.reshape(num_clips, clip_len), axis=1) > 0).all()


# --------------------------------------------------------------------------------------------
# take_frames / clips_first / UniformSample
# --------------------------------------------------------------------------------------------

def test_take_frames_and_clips_first():
    kp = np.arange(2 * 5 * 3 * 2, dtype=np.float32).reshape(2, 5, 3, 2)
    sc = np.ones((2, 5, 3), np.float32)
    clip = Clip(kp, sc, (10, 10))
    taken = take_frames(clip, np.array([4, 0, 0, 2]))
    np.testing.assert_array_equal(taken.keypoints, kp[:, [4, 0, 0, 2]])
    assert taken.keypoints.base is not kp
    with pytest.raises(ValueError, match="frame indices"):
        take_frames(clip, np.array([5]))
    parts = clips_first(take_frames(clip, np.array([0, 1, 2, 3, 4, 0])).keypoints, 2)
    assert parts.shape == (2, 2, 3, 3, 2)  # [clips, M, T, K, 2]: two clips of 3 frames
    np.testing.assert_array_equal(parts[1], kp[:, [3, 4, 0]])
    with pytest.raises(ValueError):
        clips_first(clip.keypoints, 2)


def test_uniform_sample_transform_handles_no_person():
    clip = Clip(np.zeros((0, 30, 17, 2)), np.zeros((0, 30, 17)), (100, 100))
    out = UniformSample(48)(clip, np.random.default_rng(0))
    assert out.keypoints.shape == (0, 48, 17, 2)
    out = UniformSample(48, num_clips=10, train=False)(clip)
    assert out.keypoints.shape == (0, 480, 17, 2)
    with pytest.raises(ValueError, match="rng"):
        UniformSample(48)(clip, None)
    with pytest.raises(ValueError, match="num_clips"):
        UniformSample(48, num_clips=10)


# --------------------------------------------------------------------------------------------
# subject_crop (PoseCompact)
# --------------------------------------------------------------------------------------------

def test_subject_crop_hand_computed():
    clip = make_clip([(10, 20, 0.9), (50, 40, 0.8), (3, 4, 0.0), (np.nan, 7, 0.9)])
    # Box x 10..50, y 20..40 -> centre (30, 30), half (25, 12.5) -> square half 25 -> [5, 55).
    assert subject_box(clip) == (5, 5, 50, 50)
    out = subject_crop(clip)
    assert out.img_shape == (50, 50)
    np.testing.assert_array_equal(out.keypoints[0, 0, :2], [[5, 15], [45, 35]])
    # Missing joints (score 0, NaN coordinate) keep their coordinates and scores.
    np.testing.assert_array_equal(bits(out.keypoints[0, 0, 2:]), bits(clip.keypoints[0, 0, 2:]))
    np.testing.assert_array_equal(bits(out.scores), bits(clip.scores))


def test_subject_crop_truncates_toward_zero_past_the_image():
    clip = make_clip([(1, 10, 1), (21.4, 50, 1)])
    # x: centre 11.2, half_w 12.75 -> forced to half_h 25 -> [-13.8, 36.2] -> int -> [-13, 36]
    # (int() truncates toward zero as pyskl: -13, not floor's -14). y: [5, 55].
    assert subject_box(clip) == (5, -13, 50, 49)
    out = subject_crop(clip)
    np.testing.assert_allclose(out.keypoints[0, 0], [[14, 5], [34.4, 45]], rtol=1e-6)


def test_subject_crop_hw_ratio_none_and_tuple():
    clip = make_clip([(10, 20, 1), (50, 40, 1)])
    # No forced ratio: half (25, 12.5) around (30, 30) -> x [5, 55], y [17.5, 42.5] -> [17, 42].
    assert subject_box(clip, hw_ratio=None) == (17, 5, 25, 50)
    assert subject_box(clip, hw_ratio=(1.0, 1.0)) == subject_box(clip, hw_ratio=1.0)


def test_subject_crop_skips_small_or_empty():
    small = make_clip([(10, 20, 1), (15, 60, 1)])  # x-extent 5 < 10
    assert subject_box(small) is None and subject_crop(small) is small
    missing = make_clip([(10, 20, 0), (80, 90, 0)])
    assert subject_crop(missing) is missing
    nobody = Clip(np.zeros((0, 4, 17, 2)), np.zeros((0, 4, 17)), (100, 100))
    assert subject_crop(nobody) is nobody


def test_subject_crop_uses_scores_not_zero_coordinates():
    # A real joint on x = 0 counts; a scored-0 placeholder far away does not.
    clip = make_clip([(0, 0, 1), (40, 40, 1), (400, 400, 0)])
    assert subject_box(clip) == (-5, -5, 50, 50)


# --------------------------------------------------------------------------------------------
# resize
# --------------------------------------------------------------------------------------------

def test_resize_scales_valid_joints():
    clip = make_clip([(100, 50, 1), (7, 7, 0)], img_shape=(100, 200))
    out = resize(clip, (50, 50))
    assert out.img_shape == (50, 50)
    np.testing.assert_allclose(out.keypoints[0, 0, 0], [25, 25])
    np.testing.assert_array_equal(out.keypoints[0, 0, 1], [7, 7])
    assert resize(clip, 32).img_shape == (32, 32)


def test_resize_short_edge_mmcv_rounding():
    # 90 x 160: factor 64/90, width 160 * 0.7111 = 113.78 -> int(114.28) = 114.
    assert short_edge_size((90, 160), 64) == (64, 114)
    assert short_edge_size((150, 100), 64) == (96, 64)  # int(96.0 + 0.5)
    assert short_edge_size((64, 64), 64) == (64, 64)
    clip = make_clip([(80, 45, 1)], img_shape=(90, 160))
    out = resize_short_edge(clip, 64)
    assert out.img_shape == (64, 114)
    np.testing.assert_allclose(out.keypoints[0, 0, 0], [80 * 114 / 160, 45 * 64 / 90], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# random_resized_crop
# --------------------------------------------------------------------------------------------

def test_random_resized_crop_box_bounds():
    for seed in range(200):
        top, left, h, w = random_resized_crop_box((60, 100), np.random.default_rng(seed))
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 100
        area = h * w / 6000
        # Rounding of each side moves the area a little outside [0.56, 1]; fallback is 0.6.
        assert 0.52 <= area <= 1.0


def test_random_resized_crop_falls_back_to_centre_square():
    # Aspect ratios of 10-20 never fit: centre min(H, W) square.
    box = random_resized_crop_box((60, 100), np.random.default_rng(0),
                                  aspect_ratio_range=(10.0, 20.0))
    assert box == (0, 20, 60, 60)
    clip = make_clip([(30, 30, 1), (5, 5, 0)], img_shape=(60, 100))
    out = random_resized_crop(clip, np.random.default_rng(0), aspect_ratio_range=(10.0, 20.0))
    assert out.img_shape == (60, 60)
    np.testing.assert_array_equal(out.keypoints[0, 0], [[10, 30], [5, 5]])


def test_random_resized_crop_is_box_then_crop():
    clip = make_clip([(30, 30, 1), (95, 2, 1), (5, 5, 0)], img_shape=(60, 100))
    out = random_resized_crop(clip, np.random.default_rng(5))
    box = random_resized_crop_box((60, 100), np.random.default_rng(5))
    expected = crop(clip, *box)
    assert out.img_shape == expected.img_shape == box[2:]
    np.testing.assert_array_equal(out.keypoints, expected.keypoints)
    # Joints outside the crop keep their out-of-frame coordinates.
    top, left, _, _ = box
    np.testing.assert_allclose(out.keypoints[0, 0, :2], [[30 - left, 30 - top],
                                                         [95 - left, 2 - top]])


# --------------------------------------------------------------------------------------------
# flip and flip_volume
# --------------------------------------------------------------------------------------------

def test_flip_hand_computed_coco():
    kp = np.zeros((1, 1, 17, 2), np.float32)
    sc = np.zeros((1, 1, 17), np.float32)
    kp[0, 0, 0] = (32, 3)
    sc[0, 0, 0] = 1.0          # nose: stays joint 0
    kp[0, 0, 1] = (10, 5)
    sc[0, 0, 1] = 0.7          # left eye: becomes the right eye
    kp[0, 0, 2] = (0, 0)
    sc[0, 0, 2] = 0.0          # right eye missing: becomes a missing left eye
    out = flip(Clip(kp, sc, (48, 64)), COCO)
    assert out.img_shape == (48, 64)
    np.testing.assert_array_equal(out.keypoints[0, 0, 0], [31, 3])   # 63 - 32
    np.testing.assert_array_equal(out.keypoints[0, 0, 2], [53, 5])   # 63 - 10, W - 1 - x
    assert out.scores[0, 0, 2] == np.float32(0.7)
    np.testing.assert_array_equal(out.keypoints[0, 0, 1], [0, 0])
    assert out.scores[0, 0, 1] == 0


def test_flip_checks_layout_size():
    with pytest.raises(ValueError, match="joints"):
        flip(make_clip([(1, 1, 1)] * 5), COCO)


def test_random_flip_probability_and_determinism():
    clip = make_clip([(10, 10, 1)], num_joints=17)
    assert random_flip(clip, np.random.default_rng(0), COCO, p=0.0) is clip
    flipped = random_flip(clip, np.random.default_rng(0), COCO, p=1.0)
    np.testing.assert_array_equal(flipped.keypoints, flip(clip, COCO).keypoints)
    count = sum(random_flip(clip, np.random.default_rng(s), COCO) is not clip for s in range(400))
    assert 150 < count < 250


def test_flip_volume_hand_computed():
    joints = np.zeros((17, 2, 4, 8), np.float32)
    joints[1, 0, 2, 3] = 1.0   # left eye at x = 3
    out = flip_volume(joints, COCO, "joint")
    assert out.shape == joints.shape and out.dtype == joints.dtype
    assert out[2, 0, 2, 4] == 1.0 and out.sum() == 1.0   # right eye at x = 8 - 1 - 3
    limbs = np.zeros((17, 1, 4, 8), np.float32)
    limbs[0, 0, 1, 0] = 1.0    # limb (0, 1) nose-left eye <-> limb 1 (0, 2)
    limbs[16, 0, 1, 1] = 2.0   # hip-hip maps to itself
    out = flip_volume(limbs, COCO, "limb")
    assert out[1, 0, 1, 7] == 1.0 and out[16, 0, 1, 6] == 2.0 and out.sum() == 3.0
    batch = np.random.default_rng(0).random((3, 17, 2, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(flip_volume(flip_volume(batch, COCO), COCO), batch)
    np.testing.assert_array_equal(flip_volume(batch, COCO)[1], flip_volume(batch[1], COCO))
    with pytest.raises(ValueError, match="channels"):
        flip_volume(np.zeros((16, 1, 4, 8)), COCO)
    with pytest.raises(ValueError, match="mode"):
        flip_volume(joints, COCO, "bone")


def test_flip_volume_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    vol = np.random.default_rng(1).random((2, 17, 3, 5, 6)).astype(np.float32)
    out = flip_volume(torch.from_numpy(vol), COCO, "limb")
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), flip_volume(vol, COCO, "limb"))


def _render_volume_or_reason():
    try:
        import heatvol

        return heatvol.render_volume, None
    except (ImportError, AttributeError) as exc:
        return None, f"heatvol.render_volume is not importable yet ({exc})"


@pytest.mark.parametrize("mode", ["joint", "limb"])
def test_render_of_flip_equals_flip_of_render(mode):
    """flip/flip_volume agree with the renderer: render(flip(clip)) == flip_volume(render(clip))
    on coco17, exactly wherever a Gaussian is drawn for sure.

    The renderer keeps pyskl's windows, ``[int(mu - 3 sigma), int(mu + 3 sigma)]``, which
    are not mirror-symmetric: a pixel 1.8-2.8 px (3 sigma .. 3 sigma + 1) from a joint may be
    drawn on one side and not on its mirror. Such pixels are worth at most
    exp(-(3 sigma)^2 / (2 sigma^2)) = exp(-4.5) ~ 0.011 x score; every pixel above that lies
    within 3 sigma of its joint/limb, inside both windows, and must match. A one-pixel flip
    error (pyskl's W - x) breaks the match at the peaks (differences ~0.75).
    """
    render_volume, reason = _render_volume_or_reason()
    if render_volume is None:
        pytest.skip(reason)
    sigma = 0.6
    rng = np.random.default_rng(0)
    # Coordinates on a 1/16 grid keep W - 1 - x exact in float32.
    kp = (rng.integers(-32, 64 * 16 + 32, size=(2, 3, 17, 2)) / 16).astype(np.float32)
    sc = rng.uniform(0.1, 1.0, size=(2, 3, 17)).astype(np.float32)
    sc[0, 0, 3] = 0.0
    clip = Clip(kp, sc, (56, 64))
    flipped = flip(clip, COCO)
    options = dict(size=clip.img_shape, sigma=sigma, mode=mode, layout=COCO)
    direct = np.asarray(render_volume(flipped.keypoints, flipped.scores, **options))
    mirrored = flip_volume(np.asarray(render_volume(clip.keypoints, clip.scores, **options)),
                           COCO, mode)
    assert direct.shape == mirrored.shape == ((17 if mode == "joint" else len(COCO.limbs)),
                                              3, 56, 64)
    # Joints: the same float32 expression on negated differences, bit for bit. Limbs: the
    # projection onto the segment divides, rounding differently in mirrored coordinates.
    rounding = 0.0 if mode == "joint" else 1e-5
    edge = math.exp(-((3 * sigma) ** 2) / (2 * sigma ** 2)) * float(sc.max()) * 1.001
    drawn_for_sure = np.maximum(direct, mirrored) > edge
    assert drawn_for_sure.sum() > 100
    np.testing.assert_allclose(direct[drawn_for_sure], mirrored[drawn_for_sure],
                               rtol=0, atol=rounding)
    assert np.abs(direct - mirrored).max() <= edge + rounding


# --------------------------------------------------------------------------------------------
# Transform objects and pipelines
# --------------------------------------------------------------------------------------------

def _person_clip(rng, m=2, t=100, img_shape=(480, 640)):
    kp = np.empty((m, t, 17, 2), np.float32)
    kp[..., 0] = rng.uniform(200, 400, size=(m, t, 17))
    kp[..., 1] = rng.uniform(100, 400, size=(m, t, 17))
    sc = rng.uniform(0.2, 1.0, size=(m, t, 17)).astype(np.float32)
    sc[:, ::7, 5] = 0.0
    kp[:, ::11, 3] = np.nan
    return Clip(kp, sc, img_shape)


def test_train_pipeline_shapes_and_reproducibility():
    clip = _person_clip(np.random.default_rng(0))
    pipeline = train_pipeline()
    assert [type(t).__name__ for t in pipeline.transforms] == [
        "UniformSample", "SubjectCrop", "ResizeShortEdge", "RandomResizedCrop", "Resize",
        "RandomFlip"]
    np.random.seed(0)
    state = global_rng_state()
    a = pipeline(clip, np.random.default_rng(42))
    np.testing.assert_array_equal(state[0], global_rng_state()[0])
    np.random.seed(1)
    b = pipeline(clip, np.random.default_rng(42))
    assert a.keypoints.shape == (2, 48, 17, 2) and a.img_shape == (56, 56)
    assert a.keypoints.dtype == np.float32 and a.scores.dtype == np.float32
    np.testing.assert_array_equal(bits(a.keypoints), bits(b.keypoints))
    with pytest.raises(ValueError, match="rng"):
        pipeline(clip, None)
    assert "RandomResizedCrop" in repr(pipeline)


def test_test_pipeline_deterministic_multi_clip():
    clip = _person_clip(np.random.default_rng(0))
    pipeline = test_pipeline(num_clips=10)
    np.random.seed(0)
    a = pipeline(clip)
    np.random.seed(1)
    b = pipeline(clip, np.random.default_rng(3))
    assert a.keypoints.shape == (2, 480, 17, 2) and a.img_shape == (64, 64)
    np.testing.assert_array_equal(bits(a.keypoints), bits(b.keypoints))
    assert len(clips_first(a.keypoints, 10)) == 10
    # One box over all clips, resized to 64 x 64: valid joints land inside.
    valid = a.valid()
    assert (a.keypoints[valid] >= 0).all() and (a.keypoints[valid] <= 64).all()


def test_compose_of_deterministic_transforms_matches_functions():
    clip = _person_clip(np.random.default_rng(1), t=5)
    steps = Compose([SubjectCrop(), Crop(-3, 4, 50, 60), Resize((32, 40)), ResizeShortEdge(16),
                     Flip(COCO)])
    expected = flip(resize_short_edge(resize(crop(subject_crop(clip), -3, 4, 50, 60), (32, 40)),
                                      16), COCO)
    out = steps(clip)
    np.testing.assert_array_equal(bits(out.keypoints), bits(expected.keypoints))
    assert out.img_shape == expected.img_shape == (16, 20)
    rrc = RandomResizedCrop()(clip, np.random.default_rng(2))
    np.testing.assert_array_equal(
        rrc.keypoints, random_resized_crop(clip, np.random.default_rng(2)).keypoints)
    assert RandomFlip(COCO, p=1.0)(clip, np.random.default_rng(0)).img_shape == clip.img_shape


# --------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------

_SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0])


@st.composite
def clips(draw, max_persons=2, max_frames=3):
    m = draw(st.integers(0, max_persons))
    t = draw(st.integers(1, max_frames))
    h, w = draw(st.integers(12, 300)), draw(st.integers(12, 300))
    coord = st.one_of(st.floats(-100, 400, width=32), _SPECIAL)
    score = st.one_of(st.floats(0, 1, width=32), st.sampled_from([0.0, -1.0, np.nan]))
    kp = draw(hnp.arrays(np.float32, (m, t, 17, 2), elements=coord))
    sc = draw(hnp.arrays(np.float32, (m, t, 17), elements=score))
    return Clip(kp, sc, (h, w))


def _crop_random(clip, rng):
    h, w = clip.img_shape
    return crop(clip, int(rng.integers(-20, h)), int(rng.integers(-20, w)),
                int(rng.integers(1, 200)), int(rng.integers(1, 200)))


GEOMETRIC = {
    "subject_crop": lambda c, rng: subject_crop(c),
    "subject_crop_no_ratio": lambda c, rng: subject_crop(c, hw_ratio=None, threshold=0),
    "crop": _crop_random,
    "resize": lambda c, rng: resize(c, (56, 40)),
    "resize_short_edge": lambda c, rng: resize_short_edge(c, 64),
    "random_resized_crop": lambda c, rng: random_resized_crop(c, rng),
}


def _assert_missing_kept(before: Clip, after: Clip, perm=None):
    kp, sc = before.keypoints, before.scores
    if perm is not None:
        kp, sc = kp[:, :, perm], sc[:, :, perm]
    valid_before = valid_mask(kp, sc)
    np.testing.assert_array_equal(after.valid(), valid_before)
    np.testing.assert_array_equal(bits(after.keypoints[~valid_before]), bits(kp[~valid_before]))
    np.testing.assert_array_equal(bits(after.scores), bits(sc))
    assert after.keypoints.dtype == np.float32 and after.scores.dtype == np.float32
    assert after.keypoints.shape == before.keypoints.shape


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
@PROPERTY_SETTINGS
@given(clip=clips(), seed=st.integers(0, 2**32 - 1))
def test_geometric_transforms_keep_missing_joints_and_scores(name, clip, seed):
    kp_before, sc_before = clip.keypoints.copy(), clip.scores.copy()
    out = GEOMETRIC[name](clip, np.random.default_rng(seed))
    _assert_missing_kept(clip, out)
    # Inputs are never mutated.
    np.testing.assert_array_equal(bits(clip.keypoints), bits(kp_before))
    np.testing.assert_array_equal(bits(clip.scores), bits(sc_before))


@PROPERTY_SETTINGS
@given(clip=clips(), seed=st.integers(0, 2**32 - 1))
def test_flip_keeps_missing_joints_and_is_an_involution(clip, seed):
    kp_before = clip.keypoints.copy()
    perm = COCO.flip_index()
    once = flip(clip, COCO)
    _assert_missing_kept(clip, once, perm)
    twice = flip(once, COCO)
    _assert_missing_kept(clip, twice)
    valid = clip.valid()
    np.testing.assert_allclose(twice.keypoints[valid], clip.keypoints[valid], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(bits(clip.keypoints), bits(kp_before))
    # x -> W - 1 - x on valid joints, y unchanged.
    width = clip.img_shape[1]
    expected_x = (width - 1.0) - clip.keypoints[:, :, perm, 0].astype(np.float64)
    valid_after = once.valid()
    np.testing.assert_allclose(once.keypoints[..., 0][valid_after], expected_x[valid_after],
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(once.keypoints[..., 1][valid_after],
                                  clip.keypoints[:, :, perm, 1][valid_after])
    maybe = random_flip(clip, np.random.default_rng(seed), COCO)
    assert maybe is clip or np.array_equal(bits(maybe.keypoints), bits(once.keypoints))


@PROPERTY_SETTINGS
@given(clip=clips(), seed=st.integers(0, 2**32 - 1))
def test_train_pipeline_keeps_missing_joints(clip, seed):
    out = train_pipeline(clip_len=4)(clip, np.random.default_rng(seed))
    assert out.img_shape == (56, 56) and out.keypoints.shape[1] == 4
    # Sampling draws first from the rng, so the same seed gives the frames taken.
    indices = uniform_sample_indices(clip.num_frames, 4, rng=np.random.default_rng(seed))
    sampled = take_frames(clip, indices)
    # The flip (last draw) may or may not have happened; one of the two must hold exactly.
    outcomes = []
    for perm in (None, COCO.flip_index()):
        try:
            _assert_missing_kept(sampled, out, perm)
            outcomes.append(True)
        except AssertionError:
            outcomes.append(False)
    assert any(outcomes)
    test = test_pipeline(clip_len=4, num_clips=2)(clip)
    assert test.keypoints.shape[1] == 8 and test.img_shape == (64, 64)


@PROPERTY_SETTINGS
@given(clip=clips(max_persons=1),
       box1=st.tuples(st.integers(-50, 100), st.integers(-50, 100), st.integers(1, 300),
                      st.integers(1, 300)),
       size1=st.tuples(st.integers(1, 128), st.integers(1, 128)),
       box2=st.tuples(st.integers(-20, 60), st.integers(-20, 60), st.integers(1, 100),
                      st.integers(1, 100)),
       size2=st.tuples(st.integers(1, 128), st.integers(1, 128)))
def test_crop_and_resize_compose_as_affine_maps(clip, box1, size1, box2, size2):
    out = resize(crop(resize(crop(clip, *box1), size1), *box2), size2)
    assert out.img_shape == size2
    # The composed map per axis: ((v - off1) * s1 - off2) * s2.
    x = clip.keypoints[..., 0].astype(np.float64)
    y = clip.keypoints[..., 1].astype(np.float64)
    (t1, l1, h1, w1), (t2, l2, h2, w2) = box1, box2
    ex = ((x - l1) * (size1[1] / w1) - l2) * (size2[1] / w2)
    ey = ((y - t1) * (size1[0] / h1) - t2) * (size2[0] / h2)
    valid = clip.valid()
    expected = np.stack([ex, ey], axis=-1)[valid]
    # Each step rounds once to float32; bound the error by every intermediate's size times
    # the scaling applied after it (cancellation in a crop can make the result tiny).
    sx1, sx2 = size1[1] / w1, size2[1] / w2
    sy1, sy2 = size1[0] / h1, size2[0] / h2
    ax1, ay1 = x - l1, y - t1
    ax2, ay2 = ax1 * sx1, ay1 * sy1
    ax3, ay3 = ax2 - l2, ay2 - t2
    bound_x = np.abs(ax1) * sx1 * sx2 + (np.abs(ax2) + np.abs(ax3)) * sx2 + np.abs(ex)
    bound_y = np.abs(ay1) * sy1 * sy2 + (np.abs(ay2) + np.abs(ay3)) * sy2 + np.abs(ey)
    tol = 2.0 ** -23 * np.stack([bound_x, bound_y], axis=-1)[valid] + 1e-12
    assert (np.abs(out.keypoints[valid] - expected) <= tol).all()
    _assert_missing_kept(clip, out)


@PROPERTY_SETTINGS
@given(clip=clips(max_persons=1), seed=st.integers(0, 2**32 - 1))
def test_same_rng_seed_same_output(clip, seed):
    a = random_resized_crop(clip, np.random.default_rng(seed))
    b = random_resized_crop(clip, np.random.default_rng(seed))
    assert a.img_shape == b.img_shape
    np.testing.assert_array_equal(bits(a.keypoints), bits(b.keypoints))
    h, w = clip.img_shape
    top, left, ch, cw = random_resized_crop_box((h, w), np.random.default_rng(seed))
    assert 0 <= top <= h - ch and 0 <= left <= w - cw and ch >= 1 and cw >= 1
    assert a.img_shape == (ch, cw)


# --------------------------------------------------------------------------------------------
# The fused path (issue 17): FusedPipeline == Compose, bit for bit
# --------------------------------------------------------------------------------------------

class _Shift(Transform):
    """A transform FusedPipeline does not know (applied as composed)."""

    def __call__(self, clip, rng=None):
        return crop(clip, 3, -2, clip.img_shape[0], clip.img_shape[1])


def _transform_pool(num_frames):
    return st.sampled_from([
        UniformSample(2, train=True), UniformSample(3, num_clips=2, train=False),
        UniformSample(num_frames + 2, train=True),
        SubjectCrop(), SubjectCrop(hw_ratio=None, threshold=0), SubjectCrop(hw_ratio=(1.5, 0.5)),
        Crop(-7, 5, 40, 31), Resize((56, 40)), Resize(64), ResizeShortEdge(64),
        RandomResizedCrop(), RandomResizedCrop(area_range=(0.1, 0.5)), Flip(COCO),
        RandomFlip(COCO, p=0.5), _Shift(),
    ])


@st.composite
def clips_with_huge(draw):
    """clips() plus coordinates near float32's limit (a step may overflow them to inf)."""
    clip = draw(clips(max_persons=3))
    if clip.num_persons and draw(st.booleans()):
        kp = clip.keypoints.copy()
        kp[0, 0, draw(st.integers(0, 16)), draw(st.integers(0, 1))] = draw(
            st.sampled_from([3e38, -3e38, 1e37, 2e36]))
        clip = Clip(kp, clip.scores, clip.img_shape)
    return clip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clip=clips_with_huge(), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fused_pipeline_equals_compose(clip, data, seed):
    steps = data.draw(st.lists(_transform_pool(clip.num_frames), min_size=1, max_size=7))
    composed = Compose(steps)
    kp_before = clip.keypoints.copy()
    want = composed(clip, np.random.default_rng(seed))
    got = FusedPipeline(composed)(clip, np.random.default_rng(seed))
    assert got.img_shape == want.img_shape
    np.testing.assert_array_equal(bits(got.keypoints), bits(want.keypoints))
    np.testing.assert_array_equal(bits(got.scores), bits(want.scores))
    np.testing.assert_array_equal(bits(clip.keypoints), bits(kp_before))  # input untouched


@pytest.mark.parametrize("which", ["train", "test"])
@PROPERTY_SETTINGS
@given(clip=clips(max_persons=3, max_frames=60), seed=st.integers(0, 2**32 - 1))
def test_fused_train_and_test_pipelines_equal_compose(which, clip, seed):
    pipe = (train_pipeline(8, (56, 48), COCO) if which == "train"
            else test_pipeline(8, num_clips=3, size=64))
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    want = pipe(clip, rng_a)
    got = FusedPipeline(pipe)(clip, rng_b)
    assert got.img_shape == want.img_shape
    np.testing.assert_array_equal(bits(got.keypoints), bits(want.keypoints))
    np.testing.assert_array_equal(bits(got.scores), bits(want.scores))
    assert rng_a.random() == rng_b.random()  # the same draws were taken
