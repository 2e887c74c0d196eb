"""The top-down backend (heatvol.extract.topdown) and the frame/image inputs."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from heatvol.cli import main
from heatvol.extract import BackendUnavailable, extract_videos, find_videos
from heatvol.extract.topdown import (crop_params, crop_to_frame, filter_boxes, frame_to_crop,
                                     keypoint_box, nms, warp_crop)
from heatvol.extract.video import FramesReader, VideoError, frame_files, source_kind
from heatvol.store import PoseStore

from conftest import ROOT, shared_data

MODELS = Path(os.environ.get("HEATVOL_MODELS") or ROOT.parent / "shared" / "models")


def models_dir() -> Path:
    if not (MODELS / "nanodet.onnx").is_file():
        pytest.skip(f"model files not found in {MODELS} (set HEATVOL_MODELS)")
    return MODELS


# --------------------------------------------------------------------------- boxes


def _nms_reference(boxes, scores, thr):
    """OpenCV's NMS (a well-kept implementation) as the reference."""
    if len(boxes) == 0:
        return []
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    idx = cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, thr)
    return sorted(int(i) for i in np.asarray(idx).reshape(-1))


@st.composite
def box_sets(draw):
    n = draw(st.integers(0, 25))
    xy = draw(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200),
                                 st.integers(1, 80), st.integers(1, 80)), min_size=n, max_size=n))
    scores = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n, unique=True))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xy], np.float32).reshape(-1, 4)
    return boxes, np.array(scores, np.float32) / 1000


@settings(max_examples=60, deadline=None)
@given(box_sets(), st.sampled_from([0.3, 0.5, 0.7]))
def test_nms_matches_opencv(bs, thr):
    boxes, scores = bs
    keep = nms(boxes, scores, thr)
    assert sorted(keep.tolist()) == _nms_reference(boxes, scores, thr)
    assert (np.diff(scores[keep]) <= 0).all()  # best first


def test_filter_boxes_threshold_nms_min_size_and_cap():
    boxes = np.array([[0, 0, 100, 200],   # person
                      [2, 2, 102, 198],   # its duplicate, lower score
                      [300, 0, 310, 12],  # too small (longer side 12)
                      [400, 0, 450, 90],  # below the score threshold
                      [500, 0, 560, 100],
                      [600, 0, 700, 150],
                      [np.nan, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.95, 0.1, 0.5, 0.6, 0.99], np.float32)
    b, s = filter_boxes(boxes, scores, score_thr=0.3, iou_thr=0.6, min_size=16, max_boxes=10)
    assert s.tolist() == pytest.approx([0.9, 0.6, 0.5])
    assert b[0].tolist() == [0, 0, 100, 200]
    b, s = filter_boxes(boxes, scores, score_thr=0.3, iou_thr=0.6, min_size=16, max_boxes=2)
    assert len(b) == 2
    b, s = filter_boxes(np.zeros((0, 4)), np.zeros(0), score_thr=0.3, iou_thr=0.6,
                        min_size=16, max_boxes=2)
    assert b.shape == (0, 4) and s.shape == (0,)


# --------------------------------------------------------------------------- crops


finite = st.floats(-3000, 3000, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.floats(1, 2000, width=32),
                          st.floats(1, 2000, width=32)), min_size=1, max_size=5),
       st.floats(1.0, 2.0), st.data())
def test_crop_frame_round_trip(boxes, scale, data):
    b = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32)
    centre, side = crop_params(b, scale)
    assert (side >= np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * scale * 0.999).all()
    # the box's corners lie inside the crop: [0, 1] coordinates
    corners = np.stack([b[:, :2], b[:, 2:]], 1)
    inside = frame_to_crop(corners, centre, side)
    assert (inside >= -1e-4).all() and (inside <= 1 + 1e-4).all()
    pts = np.array(data.draw(st.lists(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)),
                                      min_size=17, max_size=17)), np.float32)
    pts = np.broadcast_to(pts, (len(b), 17, 2))
    back = frame_to_crop(crop_to_frame(pts, centre, side), centre, side)
    np.testing.assert_allclose(back, pts, atol=2e-3)


@pytest.mark.parametrize("centre,side", [((300.0, 200.0), 100.0), ((20.0, 30.0), 180.0),
                                         ((500.0, 100.0), 37.0)])
def test_warp_crop_samples_where_crop_to_frame_says(centre, side):
    """A bright dot in the frame lands in the crop where frame_to_crop puts it (also for
    crops reaching outside the frame)."""
    frame = np.zeros((400, 640, 3), np.uint8)
    dot = np.array([centre[0] + side * 0.2, centre[1] - side * 0.15])
    cv2.circle(frame, (int(round(dot[0])), int(round(dot[1]))), 4, (255, 255, 255), -1)
    size = 192
    crop = warp_crop(frame, np.array(centre, np.float32), side, size)
    ys, xs = np.nonzero(crop[..., 0] > 60)
    found = np.array([xs.mean(), ys.mean()]) / size
    want = frame_to_crop(dot[None, None].astype(np.float32), np.array([centre], np.float32),
                         np.array([side], np.float32))[0, 0]
    assert np.abs(found - want).max() < 3 / min(size, side) + 0.01


def test_keypoint_box():
    kp = np.array([[10, 20], [30, 80], [0, 0]], np.float32)
    sc = np.array([0.9, 0.8, 0.05], np.float32)
    b = keypoint_box(kp, sc, 0.2, pad=0.1)
    assert b.tolist() == pytest.approx([8, 14, 32, 86])
    assert keypoint_box(kp, np.array([0.9, 0.1, 0.1], np.float32), 0.2) is None


# --------------------------------------------------------------------------- inputs


def _write_frames(folder: Path, names, size=(64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        img = np.full((size[1], size[0], 3), 10 * (i + 1), np.uint8)
        assert cv2.imwrite(str(folder / n), img)


def test_frames_reader_name_order_and_errors(tmp_path):
    _write_frames(tmp_path / "s", ["f10.png", "f2.png", "f1.png"])
    (tmp_path / "s" / "notes.txt").write_text("x")
    assert [f.name for f in frame_files(tmp_path / "s")] == ["f1.png", "f2.png", "f10.png"]
    r = FramesReader(tmp_path / "s")
    frames = list(r)
    assert [int(f[0, 0, 0]) for f in frames] == [30, 20, 10] and r.frames_read == 3
    assert r.info.fps == 0.0 and r.shape == (48, 64)
    _write_frames(tmp_path / "big", ["a.png"], size=(64, 48))
    _write_frames(tmp_path / "big", ["b.png"], size=(32, 48))
    with pytest.raises(VideoError, match="b.png: frame size"):
        list(FramesReader(tmp_path / "big"))
    _write_frames(tmp_path / "bad", ["a.png"])
    (tmp_path / "bad" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="b.jpg: cannot read"):
        list(FramesReader(tmp_path / "bad"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no image files"):
        FramesReader(tmp_path / "empty")


def test_find_inputs_kinds(tmp_path):
    _write_frames(tmp_path / "seqs" / "seq1", ["000000.jpg", "000001.jpg"])
    _write_frames(tmp_path / "seqs" / "seq2", ["000000.jpg"])
    _write_frames(tmp_path / "one", ["x.jpg", "y.jpg"])
    _write_frames(tmp_path, ["photo.png"])
    items = find_videos([tmp_path / "seqs", tmp_path / "one", tmp_path / "photo.png"])
    got = sorted((i.name, i.kind, i.label_name) for i in items)
    assert got == [("one", "frames", None), ("photo", "image", None),
                   ("seq1", "frames", None), ("seq2", "frames", None)]
    assert source_kind(tmp_path / "photo.png") == "image"
    assert source_kind(tmp_path / "one") == "frames"


def test_frames_and_images_land_in_the_store(tmp_path, monkeypatch):
    """With a stand-in backend: T per input, fps 0, source path and kind recorded."""
    import heatvol.extract as ex
    from heatvol.extract.base import Backend, FramePoses

    class Const(Backend):
        def process(self, frames):
            for f in frames:
                yield FramePoses(np.full((1, 17, 2), 5.0, np.float32),
                                 np.full((1, 17), 0.8, np.float32))

    monkeypatch.setattr(ex, "make_backend", lambda backend="x", **o: Const())
    _write_frames(tmp_path / "seq", ["1.png", "2.png", "3.png"])
    _write_frames(tmp_path, ["photo.png"])
    out = tmp_path / "p.h5"
    rep = extract_videos([tmp_path / "seq", tmp_path / "photo.png"], out, progress=False)
    assert sorted(rep.extracted) == ["photo", "seq"]
    with PoseStore(out) as s:
        assert s["seq"].num_frames == 3 and s["photo"].num_frames == 1
        assert s["seq"].fps == 0.0 and s["seq"].img_shape == (48, 64)
        assert s["seq"].source == str(tmp_path / "seq")
        assert s.attrs["source_kinds"] == {"seq": "frames", "photo": "image"}


# --------------------------------------------------------------------------- models


def test_missing_model_and_cuda_are_one_line(tmp_path):
    (tmp_path / "m").mkdir()
    _write_frames(tmp_path, ["photo.png"])
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "photo.png"), "--out",
                                    str(tmp_path / "p.h5"), "--models", str(tmp_path / "m"),
                                    "-q"])
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "nanodet.onnx" in line and str(tmp_path / "m") in line
    assert not (tmp_path / "p.h5").exists()  # nothing written
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "photo.png"), "--out",
                                    str(tmp_path / "p.h5"), "--models", str(models_dir()),
                                    "--device", "cuda", "-q"])
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "CUDA" in line and "onnxruntime-gpu" in line


def test_topdown_finds_the_people_of_a_real_clip(tmp_path):
    """PoseTrack18 clip 000001 (5 frames, 1280x720, panning camera): as a folder of frames,
    through the CLI. A running player and a player falling over a third (lying, entangled
    with him) are seen in every frame; a fourth enters at the right edge in the last frame.
    Joints lie inside the frame, heads above ankles, and the tracks keep their place."""
    src = shared_data("pose_images/posetrack18/videos/000001_mpiinew_test")
    seq = tmp_path / "clip"
    seq.mkdir()
    for f in sorted(src.glob("*.jpg")):
        (seq / f.name).symlink_to(f)
    out = tmp_path / "p.h5"
    res = CliRunner().invoke(main, ["extract", str(seq), "--out", str(out), "--models",
                                    str(models_dir()), "--max-persons", "4", "-q"])
    assert res.exit_code == 0, res.output
    with PoseStore(out) as s:
        r = s["clip"]
        assert r.num_frames == 5 and r.img_shape == (720, 1280) and r.num_persons >= 3
        assert s.attrs["extractor"]["backend"] == "topdown"
        kp, sc = r.keypoints, r.scores
        seen = sc.mean(-1) > 0.3  # [M, T]
        assert seen[:2].all(), seen
        assert seen[:, 4].sum() >= 3, seen
        good = sc > 0.3
        assert (kp[..., 0][good] >= -20).all() and (kp[..., 0][good] <= 1300).all()
        assert (kp[..., 1][good] >= -20).all() and (kp[..., 1][good] <= 740).all()
        # nose above ankles where both are seen
        both = good[..., 0] & good[..., 15]
        assert (kp[..., 0, 1][both] < kp[..., 15, 1][both]).all()
        # a track does not jump: its hip centre moves < 10 % of the frame width per frame
        hip = kp[:2, :, 11:13].mean(2)
        assert np.abs(np.diff(hip[..., 0], axis=1)).max() < 128


@pytest.mark.parametrize("preset,interval", [("fast", 3), ("accurate", 1)])
def test_a_person_who_enters_is_found_at_the_next_detector_run(preset, interval):
    """COCO 000000000785 (one skier): hidden (greyed out) in frames 0-3, visible from frame
    4 on. The detector runs every `interval` frames, so the skier is found by frame
    4 + interval - 1 and kept from then on."""
    from heatvol.extract.topdown import TopDownBackend

    img = cv2.imread(str(shared_data("pose_images/coco") / "000000000785.jpg"))
    hidden = img.copy()
    hidden[40:400, 270:510] = 128  # the annotated box is (281, 45, 219, 347)
    frames = [hidden] * 4 + [img] * 8
    be = TopDownBackend(preset, models_dir=models_dir())
    found = [len(fp) > 0 and bool((fp.scores.mean(1) > 0.3).any()) for fp in be.process(frames)]
    assert not any(found[:4]), found
    first = found.index(True)
    assert first <= 4 + interval - 1, found
    assert all(found[first:]), found
