"""The rtmpose backend (heatvol/extract/rtmpose.py) on small ONNX graphs built here with the
inputs and outputs of OpenMMLab's RTMPose / YOLOX exports (random weights, or weights whose
answer is known), the decoding math on constructed inputs, and the model download through
weights.locate against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import FileServer  # noqa: E402

from heatvol.extract import rtmpose  # noqa: E402
from heatvol.extract.base import BackendUnavailable  # noqa: E402
from heatvol.extract.rtmpose import (  # noqa: E402
    OnnxPersonDetector, RTMPoseBackend, RTMPoseEstimator, affine_matrix, box_to_center_scale,
    decode_simcc, decode_yolox_raw, letterbox)
from heatvol.extract import weights  # noqa: E402
from heatvol.extract.weights import ModelFile, ModelFileMissing, locate  # noqa: E402

K = 17
OPSET = [helper.make_opsetid("", 17)]


# --------------------------------------------------------------------------- graph builders


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="heatvol-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _double_last(nodes, inp, out, k_shape):
    """[B, K, W] -> [B, K, 2W], each value twice (SimCC's split ratio 2)."""
    nodes += [helper.make_node("Unsqueeze", [inp, "ax_last"], [out + "_u"]),
              helper.make_node("Concat", [out + "_u", out + "_u"], [out + "_c"], axis=-1),
              helper.make_node("Reshape", [out + "_c", "shape_bk_"], [out])]


def rtmpose_graph(path: Path, h: int = 256, w: int = 192, *, rng=None, batch="batch") -> Path:
    """An RTMPose-shaped model: input "input" [B, 3, h, w] float32 -> "simcc_x" [B, 17, 2w],
    "simcc_y" [B, 17, 2h]. rng given: a random 1x1 conv 3 -> 17, then means over rows /
    columns. rng None: every joint's simcc_x / simcc_y is the channel-summed crop's maximum
    over rows / columns, so the arg-max is the brightest pixel (a known answer)."""
    nodes, inits = [], [_const("ax_last", np.array([-1], np.int64)),
                        _const("shape_bk_", np.array([0, 0, -1], np.int64))]
    if rng is not None:
        inits += [_const("conv_w", rng.normal(0, 1, (K, 3, 1, 1)).astype(np.float32)),
                  _const("conv_b", rng.normal(0, 1, (K,)).astype(np.float32))]
        nodes += [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["feat"]),
                  helper.make_node("ReduceMean", ["feat"], ["col"], axes=[2], keepdims=0),
                  helper.make_node("ReduceMean", ["feat"], ["row"], axes=[3], keepdims=0)]
    else:
        inits += [_const("ax1", np.array([1], np.int64)),
                  _const("k_shape", np.array([1, K, 1], np.int64))]
        nodes += [helper.make_node("ReduceSum", ["input", "ax1"], ["gray"], keepdims=1),
                  helper.make_node("ReduceMax", ["gray"], ["col1"], axes=[2], keepdims=0),
                  helper.make_node("ReduceMax", ["gray"], ["row1"], axes=[3], keepdims=0),
                  helper.make_node("Expand", ["col1", "k_shape"], ["col"]),
                  helper.make_node("Expand", ["row1", "k_shape"], ["row"])]
    _double_last(nodes, "col", "simcc_x", None)
    _double_last(nodes, "row", "simcc_y", None)
    graph = helper.make_graph(
        nodes, "rtmpose_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, K, 2 * w]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, K, 2 * h])],
        inits)
    return _save(graph, path)


def dets_graph(path: Path, dets: np.ndarray | None = None, labels: np.ndarray | None = None,
               size: int = 640, *, rng=None, n: int = 50) -> Path:
    """A detector shaped like mmdeploy's end-to-end export: "input" [1, 3, size, size] ->
    "dets" [1, N, 5] (x1 y1 x2 y2 score, input pixels), "labels" [1, N] int64. Given dets /
    labels are returned as they are (plus 0 x the input's mean, so the graph reads its
    input); rng: random boxes from a random projection of the pooled input."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0)]
    inits = []
    if rng is not None:
        inits += [_const("proj", rng.normal(0, 1, (1, n * 5)).astype(np.float32)),
                  _const("bias", rng.normal(0, 1, (n * 5,)).astype(np.float32)),
                  _const("scale", np.tile(np.array([size, size, size, size, 1], np.float32),
                                          n)),
                  _const("dshape", np.array([1, n, 5], np.int64)),
                  _const("lproj", rng.normal(0, 1, (1, n)).astype(np.float32)),
                  _const("zero", np.zeros(1, np.float32)),
                  _const("mshape", np.array([1, 1], np.int64))]
        nodes += [helper.make_node("Reshape", ["m", "mshape"], ["m2"]),
                  helper.make_node("MatMul", ["m2", "proj"], ["p"]),
                  helper.make_node("Add", ["p", "bias"], ["pb"]),
                  helper.make_node("Sigmoid", ["pb"], ["ps"]),
                  helper.make_node("Mul", ["ps", "scale"], ["pd"]),
                  helper.make_node("Reshape", ["pd", "dshape"], ["dets"]),
                  helper.make_node("MatMul", ["m2", "lproj"], ["lp"]),
                  helper.make_node("Less", ["lp", "zero"], ["lb"]),
                  helper.make_node("Cast", ["lb"], ["labels"], to=TensorProto.INT64)]
        nn = n
    else:
        dets = np.asarray(dets, np.float32).reshape(1, -1, 5)
        labels = np.zeros((1, dets.shape[1]), np.int64) if labels is None else \
            np.asarray(labels, np.int64).reshape(1, -1)
        nn = dets.shape[1]
        inits += [_const("dets_c", dets), _const("labels_c", labels),
                  _const("zero", np.zeros(1, np.float32))]
        nodes += [helper.make_node("Mul", ["m", "zero"], ["z"]),
                  helper.make_node("Add", ["dets_c", "z"], ["dets"]),
                  helper.make_node("Identity", ["labels_c"], ["labels"])]
    graph = helper.make_graph(
        nodes, "dets_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, nn, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, nn])],
        inits)
    return _save(graph, path)


def yolox_raw_graph(path: Path, size: int = 416, classes: int = 80, *, rng) -> Path:
    """A detector shaped like Megvii's YOLOX ONNX export: "images" [1, 3, size, size] ->
    "output" [1, cells, 5 + classes] (raw box regression, sigmoid objectness and classes),
    from random 1x1 convs on the input average-pooled to strides 8, 16, 32."""
    c = 5 + classes
    nodes, inits, parts = [], [_const("flat", np.array([1, c, -1], np.int64)),
                               _const("split", np.array([4, c - 4], np.int64))], []
    for s in (8, 16, 32):
        inits += [_const(f"w{s}", (rng.normal(0, 0.3, (c, 3, 1, 1))).astype(np.float32))]
        nodes += [helper.make_node("AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s],
                                   strides=[s, s]),
                  helper.make_node("Conv", [f"p{s}", f"w{s}"], [f"c{s}"]),
                  helper.make_node("Reshape", [f"c{s}", "flat"], [f"r{s}"])]
        parts.append(f"r{s}")
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=2),
              helper.make_node("Transpose", ["cat"], ["t"], perm=[0, 2, 1]),
              helper.make_node("Split", ["t", "split"], ["reg", "cls"], axis=2),
              helper.make_node("Sigmoid", ["cls"], ["cls_s"]),
              helper.make_node("Concat", ["reg", "cls_s"], ["output"], axis=2)]
    cells = sum((size // s) ** 2 for s in (8, 16, 32))
    graph = helper.make_graph(
        nodes, "yolox_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, cells, c])], inits)
    return _save(graph, path)


# --------------------------------------------------------------------------- decoding math


def _simcc_for(points_uv, w_in, h_in, ratio=2.0, peak=0.9, n_extra=0):
    """SimCC outputs whose arg-max bins are round(u * ratio), round(v * ratio)."""
    n = points_uv.shape[0]
    sx = np.full((n, K, int(w_in * ratio)), 0.05, np.float32)
    sy = np.full((n, K, int(h_in * ratio)), 0.05, np.float32)
    bx = np.clip(np.round(points_uv[..., 0] * ratio).astype(int), 0, sx.shape[-1] - 1)
    by = np.clip(np.round(points_uv[..., 1] * ratio).astype(int), 0, sy.shape[-1] - 1)
    i, j = np.meshgrid(np.arange(n), np.arange(K), indexing="ij")
    sx[i, j, bx] = peak
    sy[i, j, by] = peak
    return sx, sy, bx, by


def test_decode_simcc_known_answer():
    # One person, box (100, 50)-(196, 306) -> centre (148, 178), size 96x256 x 1.25 =
    # 120 x 320, already 192:256 = 0.75 wide: scale (240, 320)? no: 120 < 320 * 0.75 = 240,
    # so the width grows to 240. Input pixel (u, v) -> frame (148 + (u/192 - .5) * 240, ...).
    c, s = box_to_center_scale(np.array([[100, 50, 196, 306]]), 192 / 256)
    np.testing.assert_allclose(c, [[148, 178]])
    np.testing.assert_allclose(s, [[240, 320]])
    sx = np.zeros((1, K, 384), np.float32)
    sy = np.zeros((1, K, 512), np.float32)
    sx[0, :, 192] = 0.8  # bin 192 -> u = 96 = the centre column
    sy[0, :, 100] = 0.6  # bin 100 -> v = 50 -> y = 178 + (50/256 - .5) * 320 = 80.5
    sx[0, 3, 10] = 2.0  # joint 3: bin 10 -> u = 5 -> x = 148 + (5/192 - .5) * 240 = 34.25
    kp, sc = decode_simcc(sx, sy, c, s, (192, 256))
    np.testing.assert_allclose(kp[0, 0], [148.0, 80.5], atol=1e-4)
    np.testing.assert_allclose(kp[0, 3], [34.25, 80.5], atol=1e-4)
    np.testing.assert_allclose(sc[0, 0], 0.6)  # the smaller maximum (mmpose's rule)
    np.testing.assert_allclose(sc[0, 3], 0.6)


def test_decode_simcc_scores_nan_negative_and_clipped():
    sx = np.zeros((2, K, 8), np.float32)
    sy = np.zeros((2, K, 8), np.float32)
    sx[0, 0] = np.nan  # all NaN: not found
    sy[0, 0, 2] = 1.0
    sx[0, 1] -= 1.0  # maxima <= 0: not found
    sy[0, 1] -= 3.0
    sx[1, :, 1] = 5.0  # above 1: clipped
    sy[1, :, 1] = 4.0
    kp, sc = decode_simcc(sx, sy, np.zeros((2, 2)), np.ones((2, 2)) * 4, (4, 4))
    assert sc[0, 0] == 0 and sc[0, 1] == 0
    assert np.all(sc[1] == 1.0)
    assert sc.dtype == np.float32 and kp.dtype == np.float32
    assert np.all(np.isfinite(kp))
    assert np.all((sc >= 0) & (sc <= 1))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2 ** 31 - 1), st.sampled_from([(192, 256), (288, 384)]))
def test_decode_simcc_inverts_the_crop_map(n, seed, size_wh):
    """Frame points anywhere (also off the frame, or outside the box) -> the input pixel the
    affine map sends them to -> SimCC bins -> decode gives the points back within half a bin
    (in frame pixels), for several people at once."""
    rng = np.random.default_rng(seed)
    w_in, h_in = size_wh
    x1y1 = rng.uniform(-200, 1500, (n, 2))
    wh = rng.uniform(2, 600, (n, 2))
    boxes = np.concatenate([x1y1, x1y1 + wh], 1)
    c, s = box_to_center_scale(boxes, w_in / h_in)
    np.testing.assert_allclose(s[:, 0] / s[:, 1], w_in / h_in, rtol=1e-9)
    assert np.all(s >= wh * 1.25 - 1e-6)  # the padded box fits in the crop
    uv = rng.uniform(0, 1, (n, K, 2)) * np.array([w_in - 0.5, h_in - 0.5])
    pts = np.empty_like(uv)
    for i in range(n):  # frame points whose images are uv, by inverting the affine map
        m = affine_matrix(c[i], s[i], size_wh)
        pts[i] = (uv[i] - m[:, 2]) / np.diag(m[:, :2])
        back = pts[i] @ m[:, :2].T + m[:, 2]
        np.testing.assert_allclose(back, uv[i], atol=1e-6)
    sx, sy, bx, by = _simcc_for(uv, w_in, h_in)
    kp, sc = decode_simcc(sx, sy, c, s, size_wh)
    half_bin = s / np.array([w_in, h_in]) / 2 / 2  # frame pixels per half SimCC bin
    assert np.all(np.abs(kp - pts) <= half_bin[:, None, :] + 1e-3)
    np.testing.assert_allclose(sc, 0.9)


def test_letterbox_and_yolox_raw_known_answer():
    frame = np.full((720, 1280, 3), 200, np.uint8)
    img, ratio = letterbox(frame, (640, 640))
    assert ratio == 0.5 and img.shape == (640, 640, 3)
    assert np.all(img[:360] == 200) and np.all(img[360:] == 114)
    # 416 input: 52x52 + 26x26 + 13x13 cells. Cell 52*52 + 3*26 + 5 is stride 16, (x 5, y 3).
    cells = 52 * 52 + 26 * 26 + 13 * 13
    pred = np.zeros((cells, 85), np.float32)
    a = 52 * 52 + 3 * 26 + 5
    pred[a, :4] = [0.5, 0.25, np.log(4.0), np.log(2.0)]
    pred[a, 4], pred[a, 5], pred[a, 6] = 0.8, 0.5, 0.99  # person = obj x class 0
    boxes, scores = decode_yolox_raw(pred, (416, 416))
    cx, cy = (5 + 0.5) * 16, (3 + 0.25) * 16
    np.testing.assert_allclose(boxes[a], [cx - 32, cy - 16, cx + 32, cy + 16], atol=1e-4)
    np.testing.assert_allclose(scores[a], 0.4, atol=1e-6)
    assert scores.shape == (cells,) and np.count_nonzero(scores) == 1
    with pytest.raises(ValueError, match="cells"):
        decode_yolox_raw(pred[:-1], (416, 416))


# --------------------------------------------------------------------------- runners


def test_dets_detector_known_boxes(tmp_path):
    """mmdeploy-form detector: boxes in input pixels / the resize ratio -> frame pixels,
    non-person labels dropped, boxes clipped to the frame."""
    dets = [[100, 50, 200, 250, 0.9], [10, 10, 20, 20, 0.8], [600, 300, 700, 400, 0.7]]
    path = dets_graph(tmp_path / "det.onnx", dets, labels=[0, 1, 0])
    det = OnnxPersonDetector(path, "yolox")
    frame = np.zeros((720, 1280, 3), np.uint8)
    boxes, scores = det.detect(frame)
    np.testing.assert_allclose(boxes, [[200, 100, 400, 500], [1200, 600, 1280, 720]])
    np.testing.assert_allclose(scores, [0.9, 0.7])
    # rtmdet normalises its input; the yolox form takes raw 0-255 BGR
    x_y, _ = det.preprocess(frame)
    x_r, _ = OnnxPersonDetector(path, "rtmdet").preprocess(frame)
    assert x_y.max() == 114 and x_y.min() == 0
    np.testing.assert_allclose(x_r[0, :, 0, 0], -rtmpose.RTMDET_MEAN_BGR / rtmpose.RTMDET_STD_BGR,
                               rtol=1e-6)


def test_random_detectors_run(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (360, 480, 3), np.uint8)
    for det in (OnnxPersonDetector(dets_graph(tmp_path / "d.onnx", rng=rng), "yolox"),
                OnnxPersonDetector(yolox_raw_graph(tmp_path / "y.onnx", rng=rng), "yolox")):
        boxes, scores = det.detect(frame)
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) == len(scores)
        assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= 480)
        assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= 360)
    assert det.form == "raw" and det.size_hw == (416, 416)


def test_pose_runner_finds_a_bright_dot(tmp_path):
    """Known answer through the real crop + ONNX + decode: the model's arg-max is the
    brightest crop pixel, so each person's joints land on the white dot in its box."""
    est = RTMPoseEstimator(rtmpose_graph(tmp_path / "p.onnx"))
    assert est.size_wh == (192, 256) and est.batched
    frame = np.zeros((720, 1280, 3), np.uint8)
    dots = np.array([[300.0, 200.0], [900.0, 500.0], [1270.0, 700.0]])  # last: near the edge
    for x, y in dots:
        frame[int(y), int(x)] = 255
    boxes = np.array([[250, 100, 350, 330], [850, 380, 1000, 640], [1200, 600, 1280, 720]],
                     np.float32)
    kp, sc = est.estimate(frame, boxes)
    assert kp.shape == (3, K, 2) and sc.shape == (3, K)
    _, s = box_to_center_scale(boxes, 0.75)
    tol = s[:, 0] / 192 + 1.0  # one input pixel in frame pixels, plus the dot's own pixel
    err = np.abs(kp - (dots + 0.0)[:, None, :]).max(axis=(1, 2))
    assert np.all(err <= tol), (err, tol)
    assert np.all((sc > 0) & (sc <= 1))
    np.testing.assert_allclose(sc[0], 1.0)  # a dot at full size sums to ~7 -> clipped to 1


def test_pose_runner_fixed_batch_of_one(tmp_path):
    rng = np.random.default_rng(1)
    path = rtmpose_graph(tmp_path / "p1.onnx", rng=rng, batch=1)
    est = RTMPoseEstimator(path)
    assert not est.batched
    frame = rng.integers(0, 255, (240, 320, 3), np.uint8)
    boxes = np.array([[10, 10, 100, 200], [150, 20, 300, 230]], np.float32)
    kp, sc = est.estimate(frame, boxes)
    batched = RTMPoseEstimator(rtmpose_graph(tmp_path / "pb.onnx",
                                             rng=np.random.default_rng(1)))
    kp2, sc2 = batched.estimate(frame, boxes)
    np.testing.assert_allclose(kp, kp2, atol=1e-4)
    np.testing.assert_allclose(sc, sc2, atol=1e-5)


def test_wrong_graphs_one_line(tmp_path):
    det = dets_graph(tmp_path / "det.onnx", [[0, 0, 1, 1, 1]])
    with pytest.raises(BackendUnavailable, match="simcc_x"):
        RTMPoseEstimator(det)
    with pytest.raises(BackendUnavailable, match="no such pose model"):
        RTMPoseBackend(det_model=det, pose_model=tmp_path / "missing.onnx")


# --------------------------------------------------------------------------- backend


def test_backend_on_a_real_video_random_weights(tmp_path):
    """Random-weight detector and pose model on a real video: one FramePoses per frame, with
    boxes, 17 joints, scores in [0, 1], then tracked into [M, T, 17, 2]."""
    from conftest import shared_data

    from heatvol.extract import extract_video

    videos = shared_data("videos")
    rng = np.random.default_rng(2)
    det = dets_graph(tmp_path / "det.onnx", rng=rng)
    pose = rtmpose_graph(tmp_path / "pose.onnx", rng=rng)
    be = RTMPoseBackend(det_model=det, pose_model=pose, det_score_thr=0.0, min_box=1)
    from heatvol.extract.video import VideoReader

    frames = list(VideoReader(videos / "street_5frames.mp4"))
    out = list(be.process(iter(frames)))
    assert len(out) == len(frames)
    h, w = frames[0].shape[:2]
    for fp in out:
        n = len(fp)
        assert n >= 1
        assert fp.keypoints.shape == (n, K, 2) and fp.scores.shape == (n, K)
        assert fp.boxes.shape == (n, 4) and fp.box_scores.shape == (n,)
        assert fp.person_scores.shape == (n,)
        assert np.all((fp.scores >= 0) & (fp.scores <= 1))
        assert np.all(fp.boxes[:, [0, 2]] <= w) and np.all(fp.boxes[:, [1, 3]] <= h)
    res = extract_video(videos / "street_5frames.mp4", be, max_persons=3)
    assert res["keypoints"].shape[1:] == (len(frames), K, 2)
    assert res["scores"].shape == res["keypoints"].shape[:3]
    assert 1 <= res["keypoints"].shape[0] <= 3


def test_backend_follows_people_between_detector_runs(tmp_path):
    """det_interval 3: frames 1, 2 run no detector; the person is followed by the box around
    the previous frame's joints, which stay on the dot as it moves."""
    det = dets_graph(tmp_path / "det.onnx", [[100, 60, 180, 220, 0.9]])  # 640 input, 640 frame
    pose = rtmpose_graph(tmp_path / "pose.onnx")
    be = RTMPoseBackend(det_model=det, pose_model=pose, det_interval=3)
    frames = []
    for t in range(4):
        f = np.zeros((640, 640, 3), np.uint8)
        f[140, 140 + 4 * t] = 255
        frames.append(f)
    calls = []
    real = be.detector.detect
    be.detector.detect = lambda fr: (calls.append(1), real(fr))[1]
    out = list(be.process(iter(frames)))
    assert len(calls) == 2  # frames 0 and 3
    for t, fp in enumerate(out):
        assert len(fp) == 1
        assert np.abs(fp.keypoints[0] - [140 + 4 * t, 140]).max() <= 3.0


# --------------------------------------------------------------------------- download


def _zip_of(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member.split("/")[0] + "/deploy.json", "{}")
        zf.writestr(member, data)
    return buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HEATVOL_MODELS", raising=False)
    return tmp_path / "xdg" / "heatvol" / "models"


def test_preset_downloads_to_the_cache_on_first_use(tmp_path, cache, monkeypatch):
    """The preset's files, published as OpenMMLab's zips (<stem>/end2end.onnx), are fetched
    from a local server into the per-user cache, checked, unzipped; the second start touches
    no network (the server is gone)."""
    rng = np.random.default_rng(3)
    det_bytes = dets_graph(tmp_path / "d.onnx", rng=rng).read_bytes()
    pose_bytes = rtmpose_graph(tmp_path / "p.onnx", rng=rng).read_bytes()
    zips = {"/det.zip": _zip_of("det_stem/end2end.onnx", det_bytes),
            "/pose.zip": _zip_of("pose_stem/end2end.onnx", pose_bytes)}
    srv = FileServer(zips)
    try:
        preset = rtmpose.PRESETS["rtmpose-m"]
        files = dict(weights.MODELS)
        for name, url, member in ((preset.detector, "/det.zip", "det_stem/end2end.onnx"),
                                  (preset.pose, "/pose.zip", "pose_stem/end2end.onnx")):
            files[name] = ModelFile(name=name, filename=name + ".onnx",
                                    sha256=hashlib.sha256(zips[url]).hexdigest(),
                                    format="zip:" + member, url=srv.url + url,
                                    upstream="test server", licence="Apache-2.0")
        monkeypatch.setattr(weights, "MODELS", files)
        be = RTMPoseBackend("rtmpose-m")
        assert sorted(srv.hits) == ["/det.zip", "/pose.zip"]
        assert be.pose_path == cache / f"{preset.pose}.onnx"
        assert be.pose_path.read_bytes() == pose_bytes
        assert be.detector_path.read_bytes() == det_bytes
        assert sorted(p.name for p in cache.iterdir()) == sorted(
            [f"{preset.detector}.onnx", f"{preset.pose}.onnx"])  # no temporary files left
    finally:
        srv.close()
    RTMPoseBackend("rtmpose-m")  # from the cache: the server is closed
    fp = be.process_image(np.zeros((100, 100, 3), np.uint8))
    assert fp.keypoints.shape[1:] == (K, 2)


def test_corrupt_download_is_refused(tmp_path, cache):
    body = _zip_of("s/end2end.onnx", b"not the published file")
    srv = FileServer({"/m.zip": body})
    try:
        entry = ModelFile(name="x", filename="x.onnx", sha256="0" * 64,
                          format="zip:s/end2end.onnx", url=srv.url + "/m.zip",
                          upstream="test", licence="Apache-2.0")
        with pytest.raises(ModelFileMissing) as exc:
            locate(entry, progress=None)
        assert "\n" not in str(exc.value) and "sha256" in str(exc.value)
        assert not cache.exists() or not any(cache.iterdir())
    finally:
        srv.close()


def test_preset_files_missing_say_where_to_get_them(tmp_path, cache, monkeypatch):
    """The real presets with no network: one line naming the file, the folders and the
    release URL to download (the network is cut off here, so nothing is fetched)."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(BackendUnavailable) as exc:
        RTMPoseBackend("rtmpose-m", models_dir=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "yolox-m-humanart.onnx" in msg and "https://download.openmmlab.com/" in msg
    assert str(tmp_path) in msg


def test_preset_from_models_dir(tmp_path, cache):
    rng = np.random.default_rng(4)
    p = rtmpose.PRESETS["rtmpose-s"]
    dets_graph(tmp_path / f"{p.detector}.onnx", rng=rng, size=416)
    rtmpose_graph(tmp_path / f"{p.pose}.onnx", rng=rng)
    be = RTMPoseBackend("rtmpose-s", models_dir=tmp_path)
    assert be.detector.size_hw == (416, 416)
    assert be.describe()["pose"] == f"{p.pose}.onnx"
