"""BlazePose (MediaPipe 0.10.14's pose models), multi-person and top-down, on the CPU.

The two TFLite models come from the ``mediapipe==0.10.14`` wheel (later releases no longer
ship them): ``pose_detection.tflite`` (BlazePose's person detector, SSD with 2254 anchors
on a 224x224 letterboxed frame) and ``pose_landmark_full.tflite`` (33 landmarks + 6
auxiliary points on a 256x256 rotated crop). They run on the LiteRT interpreter
(``ai-edge-litert``), with MediaPipe's pre- and post-processing re-implemented here so the
pipeline handles several people, which MediaPipe's own single-person graph does not:

1. **detector** (first frame, then every ``det_interval`` frames while fewer than
   ``max_persons`` people are followed, and in the frame after a person was lost):
   boxes with ``score >= det_score_thr`` after weighted NMS; each detection carries the
   hip centre and a body-size point, which give a rotated square region (MediaPipe's
   ``pose_detection_to_roi``: size = 2 x hip-to-size-point distance x 1.25, rotation so the
   body is upright). The detector was trained for one person: it runs on the frame with
   the followed people's heads and torsos greyed out, so it sees the next one.
2. **landmarks** per region, at most ``max_persons`` per frame: the crop is warped straight
   from the full-resolution frame (one ``cv2.warpAffine``), the model gives 39 points,
   refined with its 64x64 heatmaps (MediaPipe's ``RefineLandmarksFromHeatmap``) and
   projected back to full-frame pixels; a pose-presence score under 0.5 ends that region.
   Other people's heads and torsos are greyed out in each crop.
3. **region tracking**, as BlazePose itself does: the next frame's region of each person
   comes from this frame's auxiliary landmarks (hip centre and size point), so the detector
   is not needed every frame. Two regions that converged onto one body are merged.

Per-frame output: keypoints in the requested layout (COCO-17 picks 17 of the 33 points,
``BLAZEPOSE33_TO_COCO17``), pixel coordinates of the full frame, score = pose presence x
landmark visibility (both sigmoids of the model's logits) in [0, 1].
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..layouts import BLAZEPOSE33_TO_COCO17, layout as get_layout
from .base import Backend, BackendUnavailable, FramePoses
from .tracking import box_iou

__all__ = ["BlazePoseBackend", "model_paths", "INSTALL_HINT"]

INSTALL_HINT = ("pip install --no-deps -r requirements-extract.txt (from heatvol's repository: "
                "mediapipe==0.10.14 without jax/opencv-contrib, ai-edge-litert==2.3.0 and their "
                "runtime needs; see docs/extract.md)")

_DET_SIZE = 224
_LMK_SIZE = 256
_NUM_LMK = 39          # 33 body landmarks + 6 auxiliary ones
_AUX_CENTER, _AUX_SCALE = 33, 34
_ROI_SCALE = 1.25


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def model_paths() -> tuple[Path, Path]:
    """Paths of pose_detection.tflite and pose_landmark_full.tflite inside the installed
    mediapipe wheel (found without importing mediapipe); BackendUnavailable when absent."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the blazepose backend needs mediapipe 0.10.14's models: "
                                 f"{INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / "modules"
    det = root / "pose_detection" / "pose_detection.tflite"
    lmk = root / "pose_landmark" / "pose_landmark_full.tflite"
    missing = [p for p in (det, lmk) if not p.is_file()]
    if missing:
        raise BackendUnavailable(f"{missing[0]} not found: this mediapipe release does not ship "
                                 f"BlazePose's models; install mediapipe 0.10.14: {INSTALL_HINT}")
    return det, lmk


def _interpreter(path: Path, num_threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:  # the older name of the same interpreter
            from tflite_runtime.interpreter import Interpreter  # type: ignore
        except ImportError:
            raise BackendUnavailable(f"the blazepose backend needs the LiteRT interpreter: "
                                     f"{INSTALL_HINT}") from None
    with _quiet_stderr():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate"
        it = Interpreter(model_path=str(path), num_threads=max(1, int(num_threads)))
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        it.invoke()  # warm-up: the delegate is built at the first call
    return it


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ log lines) for the duration."""
    try:
        import sys
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def ssd_anchors() -> np.ndarray:
    """Anchor centres [2254, 2] (x, y in [0, 1]) of BlazePose's detector: MediaPipe's
    SsdAnchorsCalculator with 5 layers, strides 8 16 32 32 32, fixed anchor size, 2 anchors
    per layer (layers of equal stride stack up: 2 + 2 + 6 per cell)."""
    strides = [8, 16, 32, 32, 32]
    out = []
    i = 0
    while i < len(strides):
        n = 0
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            n += 2
            j += 1
        side = math.ceil(_DET_SIZE / strides[i])
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side,
                             indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, n, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


@dataclass
class Roi:
    """A rotated square region in full-frame pixels."""
    cx: float
    cy: float
    size: float
    rotation: float  # radians; 0 = upright
    score: float = 1.0

    @staticmethod
    def from_points(center, scale_point, score: float = 1.0) -> Roi:
        """MediaPipe's AlignmentPointsRects (target angle 90 degrees) + x1.25 scaling."""
        (x0, y0), (x1, y1) = center, scale_point
        size = 2.0 * math.hypot(x1 - x0, y1 - y0) * _ROI_SCALE
        rot = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
        rot = rot - 2 * math.pi * math.floor((rot + math.pi) / (2 * math.pi))
        return Roi(float(x0), float(y0), float(size), float(rot), float(score))

    def crop_to_image(self, side: int) -> np.ndarray:
        """2x3 affine matrix mapping crop pixels (side x side) to frame pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.size / side
        return np.array([[c * k, -s * k, self.cx - (c - s) * self.size / 2],
                         [s * k, c * k, self.cy - (s + c) * self.size / 2]], np.float64)

    def box(self) -> np.ndarray:
        """Axis-aligned bounding box (x1, y1, x2, y2) of the rotated square."""
        h = self.size / 2 * (abs(math.cos(self.rotation)) + abs(math.sin(self.rotation)))
        return np.array([self.cx - h, self.cy - h, self.cx + h, self.cy + h], np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 iou_thr: float = 0.3):
    """MediaPipe's WEIGHTED non-maximum suppression: each kept detection is the score-weighted
    mean of the boxes and keypoints it suppresses. Returns (boxes, scores, keypoints)."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    alive = np.ones(len(scores), bool)
    ob, osc, okp = [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ious = box_iou(boxes[i:i + 1], boxes)[0]
        group = alive & (ious > iou_thr)
        group[i] = True
        w = scores[group][:, None]
        ob.append((boxes[group] * w).sum(0) / w.sum())
        okp.append((keypoints[group] * w[:, :, None]).sum(0) / w.sum())
        osc.append(scores[i])
        alive &= ~group
    if not osc:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), \
            np.zeros((0,) + keypoints.shape[1:], np.float32)
    return np.array(ob, np.float32), np.array(osc, np.float32), np.array(okp, np.float32)


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel: int = 7,
                        min_conf: float = 0.5) -> np.ndarray:
    """MediaPipe's RefineLandmarksFromHeatmapCalculator. xy [N, 2] normalised to the crop,
    heatmap [H, W, N] logits; returns refined xy."""
    hm_h, hm_w, _ = heatmap.shape
    out = xy.copy()
    off = (kernel - 1) // 2
    for j in range(xy.shape[0]):
        col, row = int(xy[j, 0] * hm_w), int(xy[j, 1] * hm_h)
        if not (0 <= col < hm_w and 0 <= row < hm_h):
            continue
        r0, r1 = max(0, row - off), min(hm_h, row + off + 1)
        c0, c1 = max(0, col - off), min(hm_w, col + off + 1)
        conf = _sigmoid(heatmap[r0:r1, c0:c1, j])
        total = conf.sum()
        if total > 0 and conf.max() >= min_conf:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[j, 0] = (cols * conf).sum() / hm_w / total
            out[j, 1] = (rows * conf).sum() / hm_h / total
    return out


def _grey_out(img: np.ndarray, pts: np.ndarray) -> None:
    """Paint grey over the head and torso of a person (BlazePose-33 landmarks, image px)."""
    sh_l, sh_r, hip_l, hip_r = pts[11], pts[12], pts[23], pts[24]
    centre = (sh_l + sh_r + hip_l + hip_r) / 4
    torso_poly = np.stack([sh_l, sh_r, hip_r, hip_l])
    torso_poly = centre + (torso_poly - centre) * 1.3
    face = pts[:11]
    head_c = face.mean(0)
    radius = max(np.linalg.norm(pts[7] - pts[8]), 0.4 * np.linalg.norm(sh_l - sh_r), 2.0)
    cv2.fillConvexPoly(img, np.round(torso_poly).astype(np.int32), (128, 128, 128))
    cv2.circle(img, tuple(int(v) for v in np.round(head_c)), int(round(radius)),
               (128, 128, 128), -1)


class BlazePoseBackend(Backend):
    """Multi-person BlazePose (see the module docstring).

    max_persons: regions run through the landmark model per frame.
    det_score_thr: detector score threshold (MediaPipe's 0.5; lower finds a half-hidden
    second person sooner but also takes chairs for people).
    det_interval: run the detector at least every this many frames (to find people who
    enter); it also runs whenever nobody is followed or someone was lost.
    presence_thr: pose-presence score under which a region is dropped (MediaPipe: 0.5).
    min_pose_score: a person whose mean joint score (presence x visibility) is lower is
    dropped (the presence score alone passes on some textures).
    """

    name = "blazepose"

    def __init__(self, *, layout: str = "coco17", max_persons: int = 2,
                 det_score_thr: float = 0.5, det_interval: int = 4, presence_thr: float = 0.5,
                 num_threads: int = 1, device: str = "cpu", min_pose_score: float = 0.2):
        if device not in ("cpu", "auto"):
            raise BackendUnavailable(f"the blazepose backend runs on the CPU only "
                                     f"(--device {device} asked); use --backend mmpose for cuda")
        lay = get_layout(layout)
        if lay.name == "coco17":
            self.joint_map = np.array(BLAZEPOSE33_TO_COCO17)
        elif lay.name == "blazepose33":
            self.joint_map = np.arange(33)
        else:
            raise ValueError(f"the blazepose backend gives coco17 or blazepose33 keypoints, "
                             f"not {lay.name}")
        self.layout = lay.name
        self.max_persons = int(max_persons)
        self.det_score_thr = float(det_score_thr)
        self.det_interval = max(1, int(det_interval))
        self.presence_thr = float(presence_thr)
        self.min_pose_score = float(min_pose_score)
        det_path, lmk_path = model_paths()
        self._det = _interpreter(det_path, num_threads)
        self._lmk = _interpreter(lmk_path, num_threads)
        self._anchors = ssd_anchors()
        d_in = self._det.get_input_details()[0]
        self._det_in = d_in["index"]
        outs = {tuple(o["shape"][1:]): o["index"] for o in self._det.get_output_details()}
        self._det_boxes, self._det_scores = outs[(2254, 12)], outs[(2254, 1)]
        self._lmk_in = self._lmk.get_input_details()[0]["index"]
        outs = {tuple(o["shape"][1:]): o["index"] for o in self._lmk.get_output_details()}
        self._lmk_pts = outs[(_NUM_LMK * 5,)]
        self._lmk_flag = outs[(1,)]
        self._lmk_heat = outs[(64, 64, _NUM_LMK)]
        self.stats = {"frames": 0, "detector_runs": 0, "landmark_runs": 0}

    # -- detector -------------------------------------------------------------------------
    def detect(self, frame: np.ndarray, hide=()) -> list[Roi]:
        """Person regions in a BGR frame, best first. ``hide``: landmarks [39, 2] of people
        already followed, whose head and torso are greyed out first (BlazePose's detector
        was trained for one person: hiding the prominent one lets it see the next)."""
        h, w = frame.shape[:2]
        s = _DET_SIZE / max(h, w)
        tx, ty = (_DET_SIZE - w * s) / 2, (_DET_SIZE - h * s) / 2
        m = np.array([[s, 0, tx], [0, s, ty]], np.float64)
        img = cv2.warpAffine(frame, m, (_DET_SIZE, _DET_SIZE), flags=cv2.INTER_AREA
                             if s < 0.5 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(127.5, 127.5, 127.5))
        for pts in hide:
            _grey_out(img, pts * s + np.array([tx, ty]))
        x = (img[None, :, :, ::-1].astype(np.float32) - 127.5) / 127.5
        self._det.set_tensor(self._det_in, np.ascontiguousarray(x))
        self._det.invoke()
        self.stats["detector_runs"] += 1
        raw = self._det.get_tensor(self._det_boxes)[0]
        scores = _sigmoid(np.clip(self._det.get_tensor(self._det_scores)[0, :, 0], -100, 100))
        keep = scores >= self.det_score_thr
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        cx = raw[:, 0] / _DET_SIZE + anchors[:, 0]
        cy = raw[:, 1] / _DET_SIZE + anchors[:, 1]
        bw, bh = raw[:, 2] / _DET_SIZE, raw[:, 3] / _DET_SIZE
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = raw[:, 4:12].reshape(-1, 4, 2) / _DET_SIZE + anchors[:, None, :]
        boxes, scores, kps = weighted_nms(boxes, scores, kps, 0.3)
        # letterbox removal: tensor [0, 1] -> frame pixels
        kps = (kps * _DET_SIZE - np.array([tx, ty])) / s
        return [Roi.from_points(k[0], k[1], float(sc)) for k, sc in zip(kps, scores)]

    # -- landmarks ------------------------------------------------------------------------
    def landmarks(self, frame: np.ndarray, roi: Roi, hide=()):
        """(points [39, 2] frame pixels, visibility [39], presence [39], pose score).
        ``hide``: landmarks [39, 2] of other people, greyed out in the crop so the model
        does not snap onto a neighbour's body."""
        a = roi.crop_to_image(_LMK_SIZE)
        crop = cv2.warpAffine(frame, a, (_LMK_SIZE, _LMK_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        if len(hide):
            inv = cv2.invertAffineTransform(a)
            for pts in hide:
                _grey_out(crop, pts @ inv[:, :2].T + inv[:, 2])
        x = crop[None, :, :, ::-1].astype(np.float32) * (1.0 / 255.0)
        self._lmk.set_tensor(self._lmk_in, np.ascontiguousarray(x))
        self._lmk.invoke()
        self.stats["landmark_runs"] += 1
        flag = float(self._lmk.get_tensor(self._lmk_flag).reshape(-1)[0])
        raw = self._lmk.get_tensor(self._lmk_pts).reshape(_NUM_LMK, 5)
        heat = self._lmk.get_tensor(self._lmk_heat)[0]
        xy = refine_from_heatmap(raw[:, :2] / _LMK_SIZE, heat) * _LMK_SIZE
        pts = xy @ a[:, :2].T + a[:, 2]
        return pts, _sigmoid(raw[:, 3]), _sigmoid(raw[:, 4]), flag

    # -- video ----------------------------------------------------------------------------
    def process(self, frames):
        """Yield one FramePoses per BGR frame of one video."""
        rois: list[Roi] = []
        people: list = []
        since_det = self.det_interval
        lost = False
        for frame in frames:
            self.stats["frames"] += 1
            h, w = frame.shape[:2]
            candidates = [(r, [q[0] for j, q in enumerate(people) if j != i])
                          for i, r in enumerate(rois)]
            if len(rois) < self.max_persons and (not rois or lost
                                                 or since_det >= self.det_interval):
                since_det = 0
                for det in self.detect(frame, hide=[p[0] for p in people]):
                    if len(candidates) >= self.max_persons + 2:
                        break
                    # the same body as a followed region (or an earlier detection)? BlazePose
                    # regions of two people hugging overlap a lot, so compare centres; the
                    # landmarks decide the close calls (_merge_duplicates).
                    if any(math.hypot(det.cx - r.cx, det.cy - r.cy) < 0.1 * r.size
                           for r, _ in candidates):
                        continue
                    candidates.append((det, [q[0] for q in people]))
            since_det += 1
            lost = False
            people = []
            for roi, others in candidates:
                pts, vis, pres, flag = self.landmarks(frame, roi, others)
                if flag < self.presence_thr or not np.isfinite(pts).all() or \
                        flag * float(vis[self.joint_map].mean()) < self.min_pose_score:
                    if roi in rois:
                        lost = True
                    continue
                people.append((pts, vis, pres, flag))
            people = self._merge_duplicates(people)[:self.max_persons]
            if len(people) < len(rois):
                lost = True
            elif len(people) > len(rois) and len(people) < self.max_persons:
                # someone new: with them greyed out, the detector may see the next person
                since_det = self.det_interval
            rois = [Roi.from_points(p[0][_AUX_CENTER], p[0][_AUX_SCALE], p[3]) for p in people]
            yield self._frame_poses(people, w, h)

    @staticmethod
    def _merge_duplicates(people):
        """Drop a person whose landmarks coincide with a better one's (two regions that
        converged onto one body)."""
        if len(people) < 2:
            return people
        kept = []
        order = range(len(people))  # followed regions first, then detections by score
        for i in order:
            pts = people[i][0][:33]
            dup = False
            for j in kept:
                ref = people[j][0][:33]
                size = max(np.ptp(ref[:, 0]), np.ptp(ref[:, 1]), 1.0)
                if np.median(np.linalg.norm(pts - ref, axis=1)) < 0.1 * size:
                    dup = True
                    break
            if not dup:
                kept.append(i)
        return [people[i] for i in sorted(kept)]

    def _frame_poses(self, people, w: int, h: int) -> FramePoses:
        k = len(self.joint_map)
        if not people:
            return FramePoses.empty(k)
        kp = np.stack([p[0][self.joint_map] for p in people]).astype(np.float32)
        sc = np.stack([np.clip(p[3] * p[1][self.joint_map], 0, 1) for p in people])
        return FramePoses(kp, sc.astype(np.float32))
