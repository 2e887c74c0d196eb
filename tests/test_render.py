"""Pseudo-heatmap rendering: the Numba CPU kernels against the NumPy reference (pyskl's loops),
the reference against hand-written formulas, and the front door's contract."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import heatvol
from heatvol.kernels.reference import (quantize_uint8, render_joints_reference,
                                       render_limbs_reference)

COCO = heatvol.layout("coco17")
NUM_JOINTS = COCO.num_joints
TOLERANCE = 1e-6  # max abs difference, cpu vs reference (scores drawn <= 1.5)
SIGMA = 0.6


def f32(value: float) -> float:
    """``value`` rounded to float32 (hypothesis wants exactly representable elements)."""
    return float(np.float32(value))


SPECIAL_COORDS = [math.nan, math.inf, -math.inf, f32(1e30), f32(-1e30), f32(3e9), f32(-3e9),
                  f32(2.0 ** 60), f32(-(2.0 ** 60)), f32(1e18), -0.0]
SPECIAL_SCORES = [0.0, -0.5, f32(1e-3), f32(0.00099), 1.0, math.nan, math.inf, -math.inf]


@st.composite
def render_cases(draw, max_frames: int = 2):
    """(keypoints f32 [M,T,17,2], scores f32 [M,T,17], (H, W), sigma) with the nasty cases:
    0-3 persons, missing joints, NaN/inf/far-off coordinates, points on half-pixel boundaries
    (int() truncation), degenerate limbs (end < 1 px from start, identical), odd scores."""
    height = draw(st.integers(1, 20))
    width = draw(st.integers(1, 24))
    persons = draw(st.integers(0, 3))
    frames = draw(st.integers(1, max_frames))
    sigma = draw(st.floats(0.3, 2.0))
    extent = max(height, width)
    in_and_around = st.floats(-8, extent + 8, width=32)
    half_pixels = st.integers(-16, 2 * extent + 16).map(lambda v: v / 2)
    coord = st.one_of(in_and_around, in_and_around, in_and_around, half_pixels,
                      st.sampled_from(SPECIAL_COORDS))
    # fill=nothing(): every element drawn on its own (the default fills most of the array with
    # one background value, which hides e.g. "min of two scores" bugs).
    keypoints = draw(hnp.arrays(np.float32, (persons, frames, NUM_JOINTS, 2), elements=coord,
                                fill=st.nothing()))
    score = st.one_of(st.floats(0, 1.5, width=32), st.floats(0, 1.5, width=32),
                      st.sampled_from(SPECIAL_SCORES))
    scores = draw(hnp.arrays(np.float32, (persons, frames, NUM_JOINTS), elements=score,
                             fill=st.nothing()))
    if persons:
        # Degenerate limbs: put some limbs' end right next to (or on) their start.
        for limb in draw(st.lists(st.integers(0, len(COCO.limbs) - 1), max_size=6)):
            a, b = COCO.limbs[limb]
            offset = np.float32(draw(st.sampled_from([0.0, 0.3, -0.7, 0.99, 1.0, 1.5])))
            keypoints[:, :, b, 0] = keypoints[:, :, a, 0] + offset
            keypoints[:, :, b, 1] = keypoints[:, :, a, 1] - offset / 2
    return keypoints, scores, (height, width), sigma


def reference_volume(keypoints, scores, size, sigma, mode, use_score):
    if mode == "joint":
        return render_joints_reference(keypoints, scores, size, sigma, use_score)
    return render_limbs_reference(keypoints, scores, COCO.limbs, size, sigma, use_score)


def assert_close_to_reference(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == np.float32
    assert np.isfinite(actual).all()
    if actual.size:
        worst = np.max(np.abs(actual - expected))
        assert worst <= TOLERANCE, f"max abs diff {worst:.3g} at {np.unravel_index(np.argmax(np.abs(actual - expected)), actual.shape)}"


def check_cpu_against_reference(case, mode, use_score):
    keypoints, scores, size, sigma = case
    got = heatvol.render_volume(keypoints, scores, size=size, sigma=sigma, mode=mode,
                                use_score=use_score, render_device="cpu")
    assert_close_to_reference(got, reference_volume(keypoints, scores, size, sigma, mode, use_score))


# ---------------------------------------------------------------- cpu == reference (properties)

@pytest.mark.parametrize("mode", ["joint", "limb"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=render_cases(), use_score=st.booleans())
def test_cpu_matches_reference(mode, case, use_score):
    check_cpu_against_reference(case, mode, use_score)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["joint", "limb"])
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=render_cases(max_frames=3), use_score=st.booleans())
def test_cpu_matches_reference_long(mode, case, use_score):
    check_cpu_against_reference(case, mode, use_score)


@pytest.mark.parametrize("mode", ["joint", "limb"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=render_cases())
def test_low_precision_outputs_equal_converted_float32(mode, case):
    keypoints, scores, size, sigma = case
    kwargs = dict(size=size, sigma=sigma, mode=mode, render_device="cpu")
    full = heatvol.render_volume(keypoints, scores, **kwargs)
    half = heatvol.render_volume(keypoints, scores, dtype=np.float16, **kwargs)
    byte = heatvol.render_volume(keypoints, scores, dtype=np.uint8, **kwargs)
    assert half.dtype == np.float16 and byte.dtype == np.uint8
    np.testing.assert_array_equal(half.view(np.uint16), full.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(byte, quantize_uint8(full))


def test_float16_conversion_is_round_to_nearest_even_everywhere():
    """The kernel's own float32 -> float16 bit conversion against NumPy's, on values that hit
    every branch: 0, subnormal halves, ties, the normal range, overflow to inf."""
    from heatvol.kernels import cpu

    rng = np.random.default_rng(7)
    edges = np.array([0, 2.0 ** -26, 2.0 ** -25, 2.0 ** -24, 1.5 * 2.0 ** -24, 2.0 ** -15,
                      2.0 ** -14, 65504, 65519.99, 65520, 1e6, np.inf], np.float32)
    values = np.concatenate([edges, rng.uniform(0, 1, 5000).astype(np.float32),
                             (2.0 ** rng.uniform(-27, 17, 5000)).astype(np.float32),
                             # exact ties between two halves: odd multiples of half a half-ulp
                             (np.arange(1, 4000, 2) * 2.0 ** -25).astype(np.float32),
                             (np.arange(2049, 6000, 2) * 2.0 ** -12).astype(np.float32)])
    bits = np.empty(values.size, np.uint16)
    cpu._emit_float16_bits(values.view(np.uint32), bits)
    with np.errstate(over="ignore"):  # 65520 and above overflow to inf, as they should
        expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(bits, expected)


# ------------------------------------------------ the reference against the formula, by hand

def gaussian(dx, dy, value, sigma=SIGMA):
    return value * math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def one_point(x, y, score):
    """Joint 0 of one person in one frame at (x, y) with ``score``; every other joint missing."""
    keypoints = np.zeros((1, 1, NUM_JOINTS, 2), np.float32)
    scores = np.zeros((1, 1, NUM_JOINTS), np.float32)
    keypoints[0, 0, 0] = x, y
    scores[0, 0, 0] = score
    return keypoints, scores


def test_reference_point_window_and_values():
    # x = 3.2: window [int(1.4), int(5.0) + 1) = [1, 6); y = 4.7: [int(2.9), int(6.5) + 1) = [2, 7).
    keypoints, scores = one_point(3.2, 4.7, 0.8)
    plane = render_joints_reference(keypoints, scores, (10, 12), SIGMA)[0, 0]
    expected = np.zeros((10, 12))
    for i in range(2, 7):
        for j in range(1, 6):
            expected[i, j] = gaussian(j - 3.2, i - 4.7, 0.8)
    assert np.array_equal(plane != 0, expected != 0)
    # float32 exp and float32 rounding of the exponent: a few 1e-7 at most
    np.testing.assert_allclose(plane, expected, rtol=0, atol=5e-7)
    for backend in ("cpu", "reference"):
        vol = heatvol.render_volume(keypoints, scores, size=(10, 12), render_device=backend)
        np.testing.assert_allclose(vol[0, 0], expected, rtol=0, atol=1e-6)
        assert (vol[1:] == 0).all()


def test_reference_truncates_toward_zero_at_negative_coordinates():
    # x = -2.5: int(-4.3) = -4 -> 0 and int(-0.7) + 1 = 1 (floor would give 0: no window).
    keypoints, scores = one_point(-2.5, 3.0, 1.0)
    plane = render_joints_reference(keypoints, scores, 8, SIGMA)[0, 0]
    assert (plane[:, 1:] == 0).all()
    for i in range(8):
        inside = 1 <= i < 5  # y window [int(1.2), int(4.8) + 1) = [1, 5)
        assert math.isclose(plane[i, 0], gaussian(2.5, i - 3.0, 1.0) if inside else 0.0,
                            rel_tol=1e-5, abs_tol=0)
    # x = -2.9: int(-1.1) + 1 = 0, an empty window: nothing drawn.
    keypoints, scores = one_point(-2.9, 3.0, 1.0)
    assert not render_joints_reference(keypoints, scores, 8, SIGMA).any()
    assert not heatvol.render_volume(keypoints, scores, size=8).any()


def segment_distance2(px, py, ax, ay, bx, by):
    """Squared distance from (px, py) to segment [a, b], in double precision."""
    vx, vy = bx - ax, by - ay
    t = min(max(((px - ax) * vx + (py - ay) * vy) / (vx * vx + vy * vy), 0.0), 1.0)
    return (px - ax - t * vx) ** 2 + (py - ay - t * vy) ** 2


def test_reference_limb_matches_formula():
    # limb 0 is (nose, left_eye) = joints (0, 1): from (2, 2) to (8.5, 4), scores 0.9 and 0.7.
    keypoints = np.zeros((1, 1, NUM_JOINTS, 2), np.float32)
    scores = np.zeros((1, 1, NUM_JOINTS), np.float32)
    keypoints[0, 0, 0], keypoints[0, 0, 1] = (2, 2), (8.5, 4)
    scores[0, 0, 0], scores[0, 0, 1] = 0.9, 0.7
    size = (9, 14)
    plane = render_limbs_reference(keypoints, scores, COCO.limbs, size, SIGMA)[0, 0]
    expected = np.zeros(size)
    # window: x [int(0.2), int(10.3) + 1) = [0, 11), y [int(0.2), int(5.8) + 1) = [0, 6)
    for i in range(0, 6):
        for j in range(0, 11):
            expected[i, j] = 0.7 * math.exp(-segment_distance2(j, i, 2, 2, 8.5, 4) / (2 * SIGMA ** 2))
    np.testing.assert_allclose(plane, expected, rtol=0, atol=1e-6)
    assert (plane[:, 11:] == 0).all() and (plane[6:] == 0).all()
    got = heatvol.render_volume(keypoints, scores, size=size, mode="limb")
    np.testing.assert_allclose(got[0, 0], expected, rtol=0, atol=1e-6)
    assert not got[1:].any()  # no other limb has two present joints


def test_reference_short_limb_is_start_point_with_its_own_score():
    # |ab|^2 = 0.5 < 1: pyskl draws joint a's point Gaussian with a's score (0.9), not min (0.6).
    keypoints = np.zeros((1, 1, NUM_JOINTS, 2), np.float32)
    scores = np.zeros((1, 1, NUM_JOINTS), np.float32)
    keypoints[0, 0, 0], keypoints[0, 0, 1] = (4.0, 3.0), (4.5, 3.5)
    scores[0, 0, 0], scores[0, 0, 1] = 0.9, 0.6
    limb_plane = render_limbs_reference(keypoints, scores, COCO.limbs, 8, SIGMA)[0, 0]
    point_plane = render_joints_reference(keypoints, scores, 8, SIGMA)[0, 0]
    assert np.array_equal(limb_plane, point_plane)
    assert math.isclose(limb_plane[3, 4], 0.9, rel_tol=1e-6)
    got = heatvol.render_volume(keypoints, scores, size=8, mode="limb")
    np.testing.assert_allclose(got[0, 0], point_plane, rtol=0, atol=1e-6)
    # identical endpoints: same rule
    keypoints[0, 0, 1] = keypoints[0, 0, 0]
    assert np.array_equal(render_limbs_reference(keypoints, scores, COCO.limbs, 8, SIGMA)[0, 0],
                          point_plane)


def test_missing_joints_even_without_scores():
    # use_score=False draws value 1, but zero-score (and NaN) joints stay missing.
    keypoints, scores = one_point(3.0, 3.0, 0.0)
    keypoints[0, 0, 1] = (5.0, 5.0)
    scores[0, 0, 1] = 0.2
    keypoints[0, 0, 2] = (np.nan, 1.0)
    scores[0, 0, 2] = 1.0
    for backend in ("cpu", "reference"):
        vol = heatvol.render_volume(keypoints, scores, size=8, use_score=False,
                                    render_device=backend)
        assert not vol[0].any() and not vol[2].any()
        assert math.isclose(vol[1, 0, 5, 5], 1.0, rel_tol=1e-6)


# ----------------------------------------------------------------------------- the front door

def test_batch_equals_stacked_volumes():
    rng = np.random.default_rng(3)
    keypoints = rng.uniform(-3, 20, (3, 2, 4, NUM_JOINTS, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (3, 2, 4, NUM_JOINTS)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = 0
    for mode in ("joint", "limb"):
        for dtype in (np.float32, np.uint8):
            kwargs = dict(size=(16, 18), sigma=0.8, mode=mode, dtype=dtype)
            batch = heatvol.render_batch(keypoints, scores, **kwargs)
            stacked = np.stack([heatvol.render_volume(k, s, **kwargs)
                                for k, s in zip(keypoints, scores)])
            assert np.array_equal(batch, stacked)
            out = np.full_like(batch, 7)  # junk: the kernels must overwrite every pixel
            assert heatvol.render_batch(keypoints, scores, out=out, **kwargs) is out
            assert np.array_equal(out, batch)


def test_result_does_not_depend_on_thread_count():
    rng = np.random.default_rng(5)
    keypoints = rng.uniform(0, 32, (2, 2, 6, NUM_JOINTS, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 2, 6, NUM_JOINTS)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(heatvol.render_batch(keypoints, scores, size=32, mode="limb"))
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(results[0], r) for r in results)


def test_no_persons_gives_zeros():
    for mode, channels in (("joint", NUM_JOINTS), ("limb", len(COCO.limbs))):
        for dtype in (np.float32, np.float16, np.uint8):
            vol = heatvol.render_volume(np.zeros((0, 5, NUM_JOINTS, 2)), np.zeros((0, 5, NUM_JOINTS)),
                                        size=(6, 7), mode=mode, dtype=dtype)
            assert vol.shape == (channels, 5, 6, 7) and vol.dtype == dtype and not vol.any()


def test_float64_inputs_are_converted_once():
    rng = np.random.default_rng(9)
    keypoints = rng.uniform(0, 12, (2, 3, NUM_JOINTS, 2))
    scores = rng.uniform(0, 1, (2, 3, NUM_JOINTS))
    got = heatvol.render_volume(keypoints, scores, size=12, mode="limb")
    want = heatvol.render_volume(keypoints.astype(np.float32), scores.astype(np.float32), size=12,
                                 mode="limb")
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_other_layouts_and_their_limbs():
    lay = heatvol.layout("ntu25")
    rng = np.random.default_rng(11)
    keypoints = rng.uniform(0, 16, (1, 2, lay.num_joints, 2)).astype(np.float32)
    scores = np.ones((1, 2, lay.num_joints), np.float32)
    vol = heatvol.render_volume(keypoints, scores, size=16, mode="limb", layout="ntu25")
    want = render_limbs_reference(keypoints, scores, lay.limbs, 16, SIGMA)
    assert vol.shape == (lay.num_limbs, 2, 16, 16)
    assert_close_to_reference(vol, want)


def test_layout_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"layout 'coco17' expects K=17 joints; got K=18"):
        heatvol.render_volume(np.zeros((1, 2, 18, 2)), np.zeros((1, 2, 18)), size=8)


def test_three_channel_keypoints_are_rejected():
    with pytest.raises(ValueError, match=r"2D \(x, y\).*C=3"):
        heatvol.render_volume(np.zeros((1, 2, NUM_JOINTS, 3)), np.zeros((1, 2, NUM_JOINTS)), size=8)


@pytest.mark.parametrize("bad", [dict(scores=np.zeros((1, 2, 16))), dict(mode="bones"),
                                 dict(dtype=np.int32), dict(size=(0, 4)), dict(sigma=0.0),
                                 dict(render_device="tpu")])
def test_bad_arguments_raise_value_error(bad):
    kwargs = dict(scores=np.zeros((1, 2, NUM_JOINTS)), size=8)
    kwargs.update(bad)
    scores = kwargs.pop("scores")
    with pytest.raises(ValueError):
        heatvol.render_volume(np.zeros((1, 2, NUM_JOINTS, 2)), scores, **kwargs)


def test_wrong_out_is_rejected():
    keypoints, scores = np.zeros((2, 1, 3, NUM_JOINTS, 2)), np.zeros((2, 1, 3, NUM_JOINTS))
    with pytest.raises(ValueError, match="out must be"):
        heatvol.render_batch(keypoints, scores, size=8, out=np.zeros((2, NUM_JOINTS, 3, 8, 9), np.float32))


def test_cuda_backend_without_gpu_is_a_clear_error():
    try:
        from numba import cuda
        if cuda.is_available():
            pytest.skip("a CUDA GPU is present")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"^render_device='cuda' asked for but no usable CUDA "
                                           r"GPU/numba-cuda found") as info:
        heatvol.render_volume(np.zeros((1, 2, NUM_JOINTS, 2)), np.zeros((1, 2, NUM_JOINTS)), size=8,
                              render_device="cuda")
    assert "\n" not in str(info.value)
    # "auto" still works (picks the CPU kernels).
    assert heatvol.render_volume(np.zeros((1, 2, NUM_JOINTS, 2)), np.zeros((1, 2, NUM_JOINTS)),
                                 size=8, render_device="auto").shape == (NUM_JOINTS, 2, 8, 8)


# ------------------------------------------------- test-time flip in the kernels (issue 17)

@pytest.mark.parametrize("mode", ["joint", "limb"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(render_cases(), min_size=1, max_size=3), use_score=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float16, np.uint8]))
def test_flip_in_the_kernels_is_render_then_mirror(mode, cases, use_score, dtype):
    """render_batch(flip=True) == concatenate([v, flip_volume(v)]) bit for bit (every dtype),
    where v is the plain render; and its plain half is within TOLERANCE of the reference, whose
    own flip (render, then mirror the array) the mirrored half matches just as closely."""
    from heatvol.transforms import flip_volume

    size, sigma = cases[0][2], cases[0][3]
    persons = max(c[0].shape[0] for c in cases)
    frames = cases[0][0].shape[1]
    batch = len(cases)
    kp = np.full((batch, persons, frames, NUM_JOINTS, 2), np.nan, np.float32)
    sc = np.zeros((batch, persons, frames, NUM_JOINTS), np.float32)
    for b, (k, s, _, _) in enumerate(cases):  # one size/sigma/frames for the batch
        t = min(frames, k.shape[1])
        kp[b, :k.shape[0], :t], sc[b, :k.shape[0], :t] = k[:, :t], s[:, :t]
    kwargs = dict(size=size, sigma=sigma, mode=mode, use_score=use_score, dtype=dtype)
    plain = heatvol.render_batch(kp, sc, render_device="cpu", **kwargs)
    both = heatvol.render_batch(kp, sc, render_device="cpu", flip=True, **kwargs)
    assert both.shape == (2 * batch,) + plain.shape[1:] and both.dtype == plain.dtype
    want = np.concatenate([plain, flip_volume(plain, COCO, mode)])
    np.testing.assert_array_equal(both.view(np.uint8), want.view(np.uint8))
    if dtype == np.float32:
        ref = heatvol.render_batch(kp, sc, render_device="reference", flip=True, **kwargs)
        assert_close_to_reference(both, ref)
        np.testing.assert_array_equal(ref[batch:], flip_volume(ref[:batch], COCO, mode))


def test_flip_out_and_shapes():
    """flip with out= of [2B, ...]; a [B, ...] out is refused; an empty batch is fine."""
    rng = np.random.default_rng(3)
    kp = rng.uniform(0, 30, (2, 1, 3, NUM_JOINTS, 2)).astype(np.float32)
    sc = rng.uniform(0.2, 1, (2, 1, 3, NUM_JOINTS)).astype(np.float32)
    out = np.empty((4, len(COCO.limbs), 3, 32, 32), np.float32)
    got = heatvol.render_batch(kp, sc, size=32, mode="limb", flip=True, out=out)
    assert got is out
    np.testing.assert_array_equal(out, heatvol.render_batch(kp, sc, size=32, mode="limb",
                                                             flip=True))
    with pytest.raises(ValueError, match="out must be"):
        heatvol.render_batch(kp, sc, size=32, mode="limb", flip=True, out=out[:2])
    empty = heatvol.render_batch(kp[:0], sc[:0], size=32, flip=True)
    assert empty.shape == (0, NUM_JOINTS, 3, 32, 32)


def test_flip_bfloat16_on_the_cpu_is_the_float32_flip_rounded():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    kp = rng.uniform(0, 20, (1, 2, 2, NUM_JOINTS, 2)).astype(np.float32)
    sc = rng.uniform(0.2, 1, (1, 2, 2, NUM_JOINTS)).astype(np.float32)
    full = heatvol.render_batch(kp, sc, size=20, flip=True)
    half = heatvol.render_batch(kp, sc, size=20, flip=True, dtype="bfloat16")
    assert torch.equal(half, torch.from_numpy(full).to(torch.bfloat16))


def test_dataset_and_step_renderer_flip_equal_flip_volume(small_store):
    """`heatvol test`'s flip: PoseDataset(flip=True) items and StepRenderer(flip=True) give the
    plain volumes then exactly ``flip_volume`` of them; predict gives the same probabilities
    from the dataset's flip, the step renderer's flip and the former flip_volume path."""
    torch = pytest.importorskip("torch")
    from heatvol.data import PoseDataset, StepRenderer
    from heatvol.training.predict import predict
    from heatvol.transforms import flip_volume

    store = heatvol.PoseStore(small_store)
    names = store.split("test")[:6]
    kwargs = dict(train=False, clip_len=8, size=(16, 12), mode="limb", num_clips=2)
    plain = PoseDataset(store, names, **kwargs)
    flipped = PoseDataset(store, names, flip=True, **kwargs)
    keypoints = PoseDataset(store, names, render_device="cuda", flip=True, **kwargs)
    for i in range(len(names)):
        v = plain[i]["volume"]
        np.testing.assert_array_equal(flipped[i]["volume"],
                                      np.concatenate([v, flip_volume(v, COCO, "limb")]))
    renderer = StepRenderer(size=(16, 12), mode="limb", layout=COCO, render_device="cpu")
    item = keypoints[0]
    kp, sc = torch.from_numpy(item["keypoints"])[None], torch.from_numpy(item["scores"])[None]
    both = renderer(kp, sc, "cpu", flip=True)
    assert tuple(both.shape) == (2, 1, 2, len(COCO.limbs), 8, 16, 12)
    np.testing.assert_array_equal(both[0, 0].numpy(), plain[0]["volume"])
    np.testing.assert_array_equal(both[1, 0].numpy(),
                                  flip_volume(plain[0]["volume"], COCO, "limb"))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.zeros((1, len(COCO.limbs), 8, 16, 12)))
    common = dict(device="cpu", batch_size=4, flip=True, amp=False, channels_last=False)
    old, labels = predict(model, plain, **common)
    new, labels2 = predict(model, flipped, **common)
    step, _ = predict(model, keypoints, renderer=renderer, **common)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-6)
    np.testing.assert_allclose(step, old, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels, labels2)


def test_render_codecs_give_byte_equal_volumes(small_store, tmp_path):
    """heatvol render's codecs (issue 17): Blosc LZ4 (default) and the former deflate store
    the same volumes (decompressed arrays byte-equal, every dtype); the file says its codec,
    plain h5py reads it once hdf5plugin is imported, and a resumed file keeps its codec."""
    import h5py

    from heatvol.render.pipeline import render_store
    from heatvol.volumes import VolumeFile, VolumeWriter

    for dtype in ("float32", "float16", "uint8"):
        files = {}
        for codec in ("deflate", "blosc-lz4"):
            files[codec] = tmp_path / f"{codec}_{dtype}.h5"
            render_store(small_store, files[codec], mode="limb", size=(16, 12), clip_len=8,
                         num_clips=2, split="test", dtype=dtype, render_device="cpu",
                         progress=False, codec=codec, commit_every=4)
        with VolumeFile(files["deflate"]) as a, VolumeFile(files["blosc-lz4"]) as b:
            assert (a.codec, b.codec) == ("deflate", "blosc-lz4")
            assert a.names() == b.names() and len(a) == 15
            for i in range(len(a)):
                np.testing.assert_array_equal(a[i].view(np.uint8), b[i].view(np.uint8))
        with h5py.File(files["blosc-lz4"], "r") as f:  # hdf5plugin imported by heatvol
            assert "32001" in f["volumes"]._filters and f.attrs["codec"] == "blosc-lz4"
    with VolumeFile(files["deflate"]) as a:
        settings = a.settings
    with VolumeWriter(files["deflate"], settings, codec="blosc-lz4") as w:
        assert w.codec == "deflate"


@pytest.mark.parametrize("volume_dtype", ["float16", "uint8"])
def test_dataset_volume_dtype_is_the_float32_volume_converted(small_store, volume_dtype):
    """PoseDataset(volume_dtype=...) hands over the float32 volume converted exactly (float16
    round-to-nearest-even, uint8 floor(v*255+0.5)); model_input gives float32 back."""
    torch = pytest.importorskip("torch")
    from heatvol.data import PoseDataset, model_input

    store = heatvol.PoseStore(small_store)
    names = store.split("test")[:4]
    kwargs = dict(train=False, clip_len=8, size=16, mode="joint", num_clips=2, flip=True)
    full = PoseDataset(store, names, **kwargs)
    small = PoseDataset(store, names, volume_dtype=volume_dtype, **kwargs)
    for i in range(len(names)):
        want, got = full[i]["volume"], small[i]["volume"]
        assert got.dtype == np.dtype(volume_dtype)
        expected = want.astype(np.float16) if volume_dtype == "float16" else quantize_uint8(want)
        np.testing.assert_array_equal(got, expected)
        x = model_input({"volume": torch.from_numpy(got)[None]}, "cpu")
        assert x.dtype == torch.float32
        tol = 2.5e-4 if volume_dtype == "float16" else 0.5 / 255 + 1e-7
        assert float((x[0].numpy() - want).__abs__().max()) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_encode_chunk_gives_the_filters_own_bytes(dtype):
    """python-blosc's chunk (what heatvol writes) is byte-equal to hdf5plugin's Blosc filter
    output (what HDF5 would write), and deflate_chunk to HDF5's shuffle + gzip."""
    from heatvol.volumes import encode_chunk, filter_chunk

    rng = np.random.default_rng(5)
    kp = rng.uniform(0, 40, (2, 2, 12, NUM_JOINTS, 2)).astype(np.float32)
    sc = rng.uniform(0.2, 1, (2, 2, 12, NUM_JOINTS)).astype(np.float32)
    vol = heatvol.render_batch(kp, sc, size=(40, 36), dtype=dtype)
    for codec in ("blosc-lz4", "deflate"):
        assert encode_chunk(vol, codec) == filter_chunk(vol, codec)


# ------------------------------------------- Renderer: render_batch with its checks done once

@pytest.mark.parametrize("mode", ["joint", "limb"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=render_cases(), dtype=st.sampled_from([np.float32, np.float16, np.uint8]),
       flip=st.booleans())
def test_renderer_equals_render_batch_and_overwrites_any_out(mode, case, dtype, flip):
    """Renderer(...)(kp, sc) == render_batch(kp, sc, ...) bit for bit (the kernels' fast path,
    and the fallback for float64 inputs); and every element of a garbage-filled out= is
    written (the kernels convert and mirror only the rows a Gaussian touched, and zero-fill the
    others)."""
    keypoints, scores, size, sigma = case
    kp, sc = keypoints[None], scores[None]
    kwargs = dict(size=size, sigma=sigma, mode=mode, layout=COCO, dtype=dtype, flip=flip,
                  render_device="cpu")
    want = heatvol.render_batch(kp, sc, **kwargs)
    renderer = heatvol.render.Renderer(**kwargs)
    np.testing.assert_array_equal(renderer(kp, sc).view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(renderer(kp.astype(np.float64), sc).view(np.uint8),
                                  want.view(np.uint8))
    garbage = np.empty_like(want)
    garbage.reshape(-1).view(np.uint8).fill(0x7B)
    got = heatvol.render_batch(kp, sc, out=garbage, **kwargs)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_renderer_checks_its_arguments_once_and_its_arrays_each_call():
    with pytest.raises(ValueError, match="sigma must be a positive"):
        heatvol.render.Renderer(size=8, sigma=0)
    renderer = heatvol.render.Renderer(size=8, layout=COCO, render_device="cpu")
    with pytest.raises(ValueError, match="layout 'coco17' expects K=17"):
        renderer(np.zeros((1, 1, 2, 5, 2), np.float32), np.zeros((1, 1, 2, 5), np.float32))
