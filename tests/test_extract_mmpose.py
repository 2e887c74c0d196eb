"""The mmpose backend run for real: mmdet's Faster R-CNN (its bundled default config) and
mmpose's HRNet-w32 COCO 256x192 (its bundled config), randomly initialised (no checkpoint
can be downloaded here), on a real video; boxes and 17 keypoints per person reach the pose
store with the right shapes, scores and frame alignment.

Runs wherever mmdet, mmpose and mmcv (with its compiled ops) import; skips with the reason
elsewhere. The side environment it ran in, and what it showed, are in docs/extract.md
("The mmpose route")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, shared_data

try:
    from heatvol.extract.mmpose import require

    require()
    import mmcv.ops  # noqa: F401 - the compiled ops (nms, RoIAlign) Faster R-CNN needs
    import torch
    WHY_NOT = None
except Exception as exc:  # noqa: BLE001 - any failure to import means: skip, saying why
    WHY_NOT = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]

pytestmark = pytest.mark.skipif(
    WHY_NOT is not None,
    reason=f"mmpose route not importable here: {WHY_NOT}")

K = 17
VIDEO = "street_5frames.mp4"  # 5 frames, 960x540: a real street scene, quick on a CPU
MAX_PERSONS = 3


@pytest.fixture(scope="module")
def det_config(tmp_path_factory) -> str:
    """mmdet's default Faster R-CNN config, changed only where random weights need it: its
    81-way softmax gives every class about 1/81 (0.010-0.016 seen), under the default
    R-CNN score threshold 0.05, so no box would come through; and of 1000 proposals x 80
    classes the 100 best kept per image are rarely persons. So: score threshold 0, 100 RPN
    proposals, all their class boxes kept (then ~70 person boxes per frame, seen)."""
    from heatvol.extract.mmpose import default_configs

    base, _ = default_configs()
    path = tmp_path_factory.mktemp("cfg") / "faster-rcnn_random-weights.py"
    path.write_text(f"_base_ = [{base!r}]\n"
                    "model = dict(test_cfg=dict(rpn=dict(max_per_img=100),\n"
                    "                           rcnn=dict(score_thr=0.0, max_per_img=8000)))\n")
    return str(path)


def _backend(det_config, seed=0):
    from heatvol.extract.mmpose import MMPoseBackend

    torch.manual_seed(seed)  # random weights, the same ones for the same seed
    with pytest.warns(UserWarning, match="weights are random"):
        return MMPoseBackend(det_config=det_config, det_score_thr=0.0,
                             max_persons=MAX_PERSONS)


def _frames():
    from heatvol.extract.video import VideoReader

    return list(VideoReader(shared_data("videos") / VIDEO))


def _crop_region(boxes: np.ndarray, aspect_wh: float = 192 / 256, padding: float = 1.25):
    """mmpose's top-down crop of each box (its bbox_xyxy2cs + fixed aspect ratio): (lo, hi)
    corners [n, 2]; HRNet's heatmap maxima lie inside it."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    w = (boxes[:, 2] - boxes[:, 0]) * padding
    h = (boxes[:, 3] - boxes[:, 1]) * padding
    w2 = np.where(w > h * aspect_wh, w, h * aspect_wh)
    h2 = np.where(w > h * aspect_wh, w / aspect_wh, h)
    half = np.stack([w2, h2], 1) / 2
    return c - half, c + half


def test_boxes_and_keypoints_per_frame(det_config):
    frames = _frames()
    be = _backend(det_config)
    assert be.layout == "coco17"
    out = list(be.process(iter(frames)))
    assert len(out) == len(frames) == 5
    h, w = frames[0].shape[:2]
    for fp in out:
        n = len(fp)
        assert 1 <= n <= MAX_PERSONS
        assert fp.keypoints.shape == (n, K, 2) and fp.keypoints.dtype == np.float32
        assert fp.scores.shape == (n, K) and fp.scores.dtype == np.float32
        assert np.all(np.isfinite(fp.keypoints)) and np.all(np.isfinite(fp.scores))
        assert np.all((fp.scores >= 0) & (fp.scores <= 1))
        assert fp.boxes.shape == (n, 4) and fp.box_scores.shape == (n,)
        assert np.all(np.diff(fp.box_scores) <= 0)  # best box first
        assert np.all(fp.boxes[:, 2] >= fp.boxes[:, 0]) and np.all(fp.boxes[:, 3] >= fp.boxes[:, 1])
        assert np.all(fp.boxes >= -1) and np.all(fp.boxes[:, [0, 2]] <= w + 1) and \
            np.all(fp.boxes[:, [1, 3]] <= h + 1)
        np.testing.assert_allclose(fp.person_scores, fp.scores.mean(1) * fp.box_scores,
                                   rtol=1e-6)
        lo, hi = _crop_region(fp.boxes)  # each person's joints lie in its own box's crop
        tol = 0.02 * (hi - lo)[:, None, :] + 1
        assert np.all(fp.keypoints >= lo[:, None, :] - tol)
        assert np.all(fp.keypoints <= hi[:, None, :] + tol)


def test_store_shapes_scores_and_frame_alignment(det_config, tmp_path):
    """extract_videos with the mmpose backend -> the store holds [M, T, 17, 2] with T = the
    video's frames; every stored person at frame t is one of the poses the backend gave for
    frame t (the same random weights, by seed)."""
    from heatvol.extract import extract_videos
    from heatvol.store import PoseStore

    video = shared_data("videos") / VIDEO
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="weights are random"):
        rep = extract_videos([video], tmp_path / "p.h5", backend="mmpose",
                             det_config=det_config, det_score_thr=0.0,
                             max_persons=MAX_PERSONS, progress=False)
    assert rep.extracted == [Path(VIDEO).stem] and not rep.failed
    with PoseStore(tmp_path / "p.h5") as store:
        rec = store[Path(VIDEO).stem]
        kp, sc = rec.keypoints, rec.scores
        assert rec.img_shape == (540, 960) and rec.fps == pytest.approx(5.0)
    assert kp.shape[1:] == (5, K, 2) and 1 <= kp.shape[0] <= MAX_PERSONS
    assert sc.shape == kp.shape[:3]
    assert np.all((sc >= 0) & (sc <= 1))

    per_frame = list(_backend(det_config, seed=0).process(iter(_frames())))
    for t, fp in enumerate(per_frame):
        for m in range(kp.shape[0]):
            if not sc[m, t].any():
                continue  # this track has nobody at frame t
            d = np.abs(fp.keypoints - kp[m, t][None]).max(axis=(1, 2))
            assert d.min() <= 1e-3, f"person {m} at frame {t} matches no pose of frame {t}"
            i = int(d.argmin())
            np.testing.assert_allclose(sc[m, t], fp.scores[i], atol=1e-6)


def test_cli_extract_backend_mmpose(det_config, tmp_path):
    """``heatvol extract --backend mmpose`` as a user runs it (default HRNet config)."""
    video = shared_data("videos") / VIDEO
    out = tmp_path / "cli.h5"
    res = subprocess.run([sys.executable, "-m", "heatvol.cli", "extract", str(video),
                          "--out", str(out), "--backend", "mmpose", "--det-config", det_config,
                          "--det-score-thr", "0", "--max-persons", str(MAX_PERSONS), "-q"],
                         capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    from heatvol.store import PoseStore

    with PoseStore(out) as store:
        rec = store[Path(VIDEO).stem]
        assert rec.keypoints.shape[1:] == (5, K, 2)
