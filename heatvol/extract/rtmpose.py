"""RTMPose top-down backend on onnxruntime: a YOLOX / RTMDet person detector + RTMPose
(SimCC) on each box, with the public ONNX exports OpenMMLab publishes (the files rtmlib
runs), and no mmcv, mmdet or mmpose.

Backend ``rtmpose``. Models are chosen by a preset (``PRESETS``: ``rtmpose-m`` by default)
whose files are found by ``weights.locate`` (``--models DIR`` / ``HEATVOL_MODELS`` / the
per-user cache), or by local ONNX paths (``det_model=``, ``pose_model=``), which win.

Per frame (BGR uint8 [H, W, 3]):

1. **Detect** (``OnnxPersonDetector``): the frame resized to fit the detector's input (aspect
   kept, top-left, the rest filled with grey 114), BGR; YOLOX takes 0-255 values, RTMDet
   subtracts mean / divides by std (BGR: 103.53, 116.28, 123.675 / 57.375, 57.12, 58.395),
   as their mmdet configs do. Two output forms are read:
   - ``dets`` [1, N, 5] (x1, y1, x2, y2, score) in input pixels, with ``labels`` [1, N]
     (mmdeploy's end-to-end export, NMS inside the graph; label 0 = person);
   - one raw YOLOX output [1, A, 5 + C] over the stride-8/16/32 grid cells (Megvii's own
     ONNX exports): (dx, dy, log w, log h, objectness, C class scores) -> centre =
     (cell + (dx, dy)) x stride, size = exp(log w, log h) x stride, person score =
     objectness x class-0 score.
   Boxes are mapped back to frame pixels (divided by the resize ratio) and clipped to the
   frame, then thresholded, NMS'd, size-filtered (``topdown.filter_boxes``).
2. **Pose** (``RTMPoseEstimator``), all boxes of a frame in one batch where the graph's batch
   axis is dynamic: each box's centre c and size (w, h) x ``padding`` (1.25), widened or
   heightened to the model's aspect ratio (w_in / h_in) -> scale s = (s_w, s_h); the crop is
   the affine map frame -> input ``u = (x - c) * w_in / s_w + w_in / 2`` (same for y), bilinear,
   black outside the frame; RGB, mean (123.675, 116.28, 103.53) / std (58.395, 57.12, 57.375).
   Outputs ``simcc_x`` [n, K, w_in * r] and ``simcc_y`` [n, K, h_in * r] (r = 2, the SimCC
   split ratio): per joint the arg-max bin b -> input pixel b / r -> frame pixel
   ``x = c + (b / r / w_in - 0.5) * s_w``; the joint's score is the smaller of the two maxima
   (mmpose's ``get_simcc_maximum``), clipped to [0, 1] (raw SimCC maxima can pass 1; a
   non-positive maximum means "not found": score 0).

Person score = mean joint score x detector score. With ``det_interval`` > 1 the detector runs
every det_interval-th frame and people are followed in between by the box around their
previous keypoints (as ``topdown`` does; the previous box where the joints span less than
``min_box``).

Licences: the RTMPose, RTMDet and YOLOX (HumanArt) exports are OpenMMLab's, Apache-2.0;
Megvii's YOLOX exports are Apache-2.0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Backend, BackendUnavailable, FramePoses
from .topdown import filter_boxes, keypoint_box, ort_session
from .tracking import box_iou
from .weights import locate

__all__ = ["RTMPoseBackend", "RTMPosePreset", "PRESETS", "OnnxPersonDetector",
           "RTMPoseEstimator", "letterbox", "decode_yolox_raw", "box_to_center_scale",
           "affine_matrix", "decode_simcc"]

RTMDET_MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
RTMDET_STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
RTMPOSE_MEAN_RGB = np.array([123.675, 116.28, 103.53], np.float32)
RTMPOSE_STD_RGB = np.array([58.395, 57.12, 57.375], np.float32)
PAD_VALUE = 114

@dataclass(frozen=True)
class RTMPosePreset:
    """detector / pose: keys of heatvol.extract.weights.MODELS; detector_kind: "yolox" or "rtmdet"
    (decides the input normalisation)."""

    detector: str
    pose: str
    detector_kind: str = "yolox"


PRESETS: dict[str, RTMPosePreset] = {
    "rtmpose-m": RTMPosePreset("yolox-m-humanart", "rtmpose-m-body7"),
    "rtmpose-s": RTMPosePreset("yolox-tiny-humanart", "rtmpose-s-body7"),
    "rtmpose-x": RTMPosePreset("yolox-x-humanart", "rtmpose-x-body7"),
}

# --------------------------------------------------------------------------- detector


def letterbox(frame: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The frame resized to fit (h_in, w_in) with its aspect kept, at the top-left of a
    grey-114 canvas. Returns (uint8 [h_in, w_in, 3], ratio = input pixels per frame pixel)."""
    import cv2

    h_in, w_in = size_hw
    h, w = frame.shape[:2]
    ratio = min(h_in / h, w_in / w)
    nh, nw = max(1, min(h_in, int(h * ratio))), max(1, min(w_in, int(w * ratio)))
    canvas = np.full((h_in, w_in, 3), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, float(ratio)


def decode_yolox_raw(pred: np.ndarray, size_hw: tuple[int, int],
                     strides: tuple[int, ...] = (8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A raw YOLOX head output [A, 5 + C] (cells of stride 8, then 16, then 32, row-major)
    -> (boxes float32 [A, 4] x1 y1 x2 y2 in input pixels, person scores float32 [A])."""
    h_in, w_in = size_hw
    centres, cell_stride = [], []
    for s in strides:
        gy, gx = np.meshgrid(np.arange(h_in // s), np.arange(w_in // s), indexing="ij")
        centres.append(np.stack([gx.ravel(), gy.ravel()], 1))
        cell_stride.append(np.full(gx.size, s))
    grid = np.concatenate(centres).astype(np.float64)
    stride = np.concatenate(cell_stride).astype(np.float64)[:, None]
    pred = np.asarray(pred, np.float64)
    if pred.shape[0] != grid.shape[0]:
        raise ValueError(f"YOLOX output has {pred.shape[0]} cells; a {w_in}x{h_in} input with "
                         f"strides {strides} has {grid.shape[0]}")
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(np.clip(pred[:, 2:4], -50, 50)) * stride
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    return boxes.astype(np.float32), (pred[:, 4] * pred[:, 5]).astype(np.float32)


class OnnxPersonDetector:
    """A YOLOX or RTMDet ONNX export as a person detector.

    ``detect(frame)`` -> (boxes float32 [n, 4] x1 y1 x2 y2 frame pixels, scores float32 [n]),
    before thresholding / NMS (``topdown.filter_boxes`` does those)."""

    def __init__(self, path, kind: str = "yolox", device: str = "cpu", num_threads=None,
                 input_size: tuple[int, int] | None = None):
        if kind not in ("yolox", "rtmdet"):
            raise ValueError(f"detector kind must be yolox or rtmdet, got {kind!r}")
        self.kind, self.path = kind, Path(path)
        self.session = ort_session(path, device, num_threads)
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        self.size_hw = _static_hw(inp.shape, input_size, path, default=(640, 640))
        outs = self.session.get_outputs()
        self.outputs = [o.name for o in outs]
        names = set(self.outputs)
        if "dets" in names:
            self.form = "dets"
        elif len(outs) == 1 and len(outs[0].shape) == 3:
            self.form = "raw"
        else:
            raise BackendUnavailable(f"{path}: not a YOLOX/RTMDet export heatvol reads (outputs "
                                     f"{', '.join(self.outputs)}; expected 'dets' [+ 'labels'] "
                                     f"or one raw [1, cells, 5 + classes])")

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 [1, 3, h_in, w_in] (BGR) and the resize ratio."""
        img, ratio = letterbox(frame, self.size_hw)
        x = img.astype(np.float32)
        if self.kind == "rtmdet":
            x = (x - RTMDET_MEAN_BGR) / RTMDET_STD_BGR
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), ratio

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, ratio = self.preprocess(frame)
        res = dict(zip(self.outputs, self.session.run(self.outputs, {self.input: x})))
        if self.form == "dets":
            dets = np.asarray(res["dets"], np.float32).reshape(-1, 5)
            keep = np.ones(len(dets), bool)
            if "labels" in res:
                keep = np.asarray(res["labels"]).reshape(-1)[:len(dets)] == 0
            boxes, scores = dets[keep, :4], dets[keep, 4]
        else:
            raw = np.asarray(res[self.outputs[0]])
            boxes, scores = decode_yolox_raw(raw[0], self.size_hw)
        boxes = boxes / ratio
        h, w = frame.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes.astype(np.float32), scores.astype(np.float32)


# --------------------------------------------------------------------------- pose


def box_to_center_scale(boxes: np.ndarray, aspect_wh: float, padding: float = 1.25
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] (x1, y1, x2, y2) -> (centres float64 [n, 2], scales float64 [n, 2]
    (s_w, s_h)): the box size x padding, the shorter side grown so that s_w / s_h =
    aspect_wh (the model input's width / height)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    w = np.maximum(b[:, 2] - b[:, 0], 1e-3) * padding
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3) * padding
    wide = w > h * aspect_wh
    sw = np.where(wide, w, h * aspect_wh)
    sh = np.where(wide, w / aspect_wh, h)
    return centre, np.stack([sw, sh], 1)


def affine_matrix(centre: np.ndarray, scale: np.ndarray, size_wh: tuple[int, int]
                  ) -> np.ndarray:
    """The 2x3 map frame pixel (x, y) -> input pixel (u, v) =
    ((x - c_x) * w_in / s_w + w_in / 2, (y - c_y) * h_in / s_h + h_in / 2)."""
    w_in, h_in = size_wh
    kx, ky = w_in / float(scale[0]), h_in / float(scale[1])
    return np.array([[kx, 0, w_in / 2 - kx * float(centre[0])],
                     [0, ky, h_in / 2 - ky * float(centre[1])]], np.float64)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, centres: np.ndarray,
                 scales: np.ndarray, size_wh: tuple[int, int], split_ratio: float = 2.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """SimCC outputs simcc_x [n, K, Wx], simcc_y [n, K, Wy] -> (keypoints float32 [n, K, 2]
    frame pixels, scores float32 [n, K] in [0, 1]); see the module docstring. NaN outputs
    give score 0."""
    sx = np.nan_to_num(np.asarray(simcc_x, np.float32), nan=-np.inf)
    sy = np.nan_to_num(np.asarray(simcc_y, np.float32), nan=-np.inf)
    bx, by = sx.argmax(-1), sy.argmax(-1)
    vx, vy = np.take_along_axis(sx, bx[..., None], -1)[..., 0], \
        np.take_along_axis(sy, by[..., None], -1)[..., 0]
    score = np.minimum(vx, vy)
    w_in, h_in = size_wh
    c = np.asarray(centres, np.float64)[:, None, :]
    s = np.asarray(scales, np.float64)[:, None, :]
    uv = np.stack([bx, by], -1).astype(np.float64) / split_ratio
    kp = c + (uv / np.array([w_in, h_in], np.float64) - 0.5) * s
    score = np.where(np.isfinite(score) & (score > 0), score, 0.0)
    return kp.astype(np.float32), np.clip(score, 0.0, 1.0).astype(np.float32)


class RTMPoseEstimator:
    """An RTMPose ONNX export (input [B, 3, h_in, w_in], outputs simcc_x, simcc_y).

    ``estimate(frame, boxes)`` -> (keypoints float32 [n, K, 2] frame pixels, scores float32
    [n, K]); the crops of one call go through the model as one batch when the graph's batch
    axis is dynamic, else one by one."""

    def __init__(self, path, device: str = "cpu", num_threads=None, padding: float = 1.25,
                 split_ratio: float = 2.0, input_size: tuple[int, int] | None = None):
        self.path = Path(path)
        self.session = ort_session(path, device, num_threads)
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        h, w = _static_hw(inp.shape, input_size, path, default=None)
        self.size_wh = (w, h)
        self.batched = not isinstance(inp.shape[0], int) or inp.shape[0] != 1
        names = [o.name for o in self.session.get_outputs()]
        if "simcc_x" not in names or "simcc_y" not in names:
            raise BackendUnavailable(f"{path}: not an RTMPose (SimCC) export: outputs "
                                     f"{', '.join(names)}, expected simcc_x and simcc_y")
        self.outputs = ["simcc_x", "simcc_y"]
        self.padding, self.split_ratio = float(padding), float(split_ratio)

    def crops(self, frame: np.ndarray, boxes: np.ndarray):
        """(float32 [n, 3, h_in, w_in] normalised RGB crops, centres [n, 2], scales [n, 2])."""
        import cv2

        w_in, h_in = self.size_wh
        centres, scales = box_to_center_scale(boxes, w_in / h_in, self.padding)
        out = np.empty((len(centres), 3, h_in, w_in), np.float32)
        for i in range(len(centres)):
            m = affine_matrix(centres[i], scales[i], self.size_wh)
            crop = cv2.warpAffine(frame, m, (w_in, h_in), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
            x = (crop[:, :, ::-1].astype(np.float32) - RTMPOSE_MEAN_RGB) / RTMPOSE_STD_RGB
            out[i] = x.transpose(2, 0, 1)
        return out, centres, scales

    def estimate(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, centres, scales = self.crops(frame, boxes)
        if self.batched:
            sx, sy = self.session.run(self.outputs, {self.input: x})
        else:
            parts = [self.session.run(self.outputs, {self.input: x[i:i + 1]})
                     for i in range(len(x))]
            sx = np.concatenate([p[0] for p in parts])
            sy = np.concatenate([p[1] for p in parts])
        return decode_simcc(sx, sy, centres, scales, self.size_wh, self.split_ratio)


def _static_hw(shape, given, path, default):
    """(h, w) from an ONNX input shape [B, 3, H, W], else ``given`` (h, w), else default."""
    dims = list(shape)
    if len(dims) == 4 and isinstance(dims[2], int) and isinstance(dims[3], int) and \
            dims[2] > 0 and dims[3] > 0:
        return int(dims[2]), int(dims[3])
    if given is not None:
        return int(given[0]), int(given[1])
    if default is not None:
        return default
    raise BackendUnavailable(f"{path}: the input size is not fixed in the graph ({dims}); "
                             f"give it (height, width)")


# --------------------------------------------------------------------------- backend


class RTMPoseBackend(Backend):
    """Detector + RTMPose on every box (see the module docstring).

    preset: a key of PRESETS; det_model / pose_model: local ONNX files that replace the
    preset's (det_kind says how to normalise the detector input: yolox or rtmdet).
    models_dir: where preset files are looked for (weights.locate). device: cpu or cuda."""

    name = "rtmpose"
    layout = "coco17"

    def __init__(self, preset: str = "rtmpose-m", *, det_model: str | os.PathLike | None = None,
                 pose_model: str | os.PathLike | None = None, det_kind: str | None = None,
                 models_dir=None, device: str = "cpu", num_threads: int | None = None,
                 layout: str = "coco17", det_score_thr: float = 0.3, nms_iou: float = 0.6,
                 min_box: float = 16.0, max_people: int = 20, det_interval: int = 1,
                 kp_thr: float = 0.3, match_iou: float = 0.4, padding: float = 1.25):
        if layout != "coco17":
            raise ValueError(f"the rtmpose backend gives coco17 keypoints, not {layout}")
        if preset not in PRESETS:
            raise ValueError(f"unknown rtmpose preset {preset!r}; known: {', '.join(PRESETS)}")
        if int(det_interval) < 1:
            raise ValueError(f"det_interval must be >= 1, got {det_interval}")
        p = PRESETS[preset]
        self.detector_path = _local(det_model, "detector") if det_model is not None \
            else locate(p.detector, models_dir)
        self.pose_path = _local(pose_model, "pose model") if pose_model is not None \
            else locate(p.pose, models_dir)
        self.detector = OnnxPersonDetector(self.detector_path, det_kind or p.detector_kind,
                                           device, num_threads)
        self.pose = RTMPoseEstimator(self.pose_path, device, num_threads, padding=padding)
        self.preset, self.device = preset, device
        self.det_score_thr, self.nms_iou = float(det_score_thr), float(nms_iou)
        self.min_box, self.max_people = float(min_box), int(max_people)
        self.det_interval, self.kp_thr = int(det_interval), float(kp_thr)
        self.match_iou = float(match_iou)

    def describe(self) -> dict:
        """What ran (for the store's attrs)."""
        return {"backend": self.name, "preset": self.preset, "device": self.device,
                "detector": self.detector_path.name, "pose": self.pose_path.name,
                "det_interval": self.det_interval, "det_score_thr": self.det_score_thr}

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [n, 4] and scores [n] after threshold, NMS and minimum size."""
        b, s = self.detector.detect(frame)
        return filter_boxes(b, s, score_thr=self.det_score_thr, iou_thr=self.nms_iou,
                            min_size=self.min_box, max_boxes=self.max_people)

    def estimate(self, frame: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray
                 ) -> FramePoses:
        if len(boxes) == 0:
            return FramePoses.empty(17)
        kp, sc = self.pose.estimate(frame, boxes)
        if kp.shape[1] != 17:
            raise BackendUnavailable(f"{self.pose_path}: the pose model gives {kp.shape[1]} "
                                     f"joints; the rtmpose backend needs COCO-17")
        bs = np.asarray(box_scores, np.float32)
        return FramePoses(kp, sc, person_scores=sc.mean(1) * bs,
                          boxes=np.asarray(boxes, np.float32), box_scores=bs)

    def process_image(self, frame: np.ndarray) -> FramePoses:
        return self.estimate(frame, *self.detect(frame))

    def process(self, frames: Iterable[np.ndarray]) -> Iterator[FramePoses]:
        prev: FramePoses | None = None
        for t, frame in enumerate(frames):
            fb, fs = [], []
            if prev is not None and self.det_interval > 1:
                for i in range(len(prev)):
                    b = keypoint_box(prev.keypoints[i], prev.scores[i], self.kp_thr)
                    if b is None:
                        continue
                    if max(b[2] - b[0], b[3] - b[1]) < self.min_box:
                        b = prev.boxes[i]  # joints too close together to size a box
                    fb.append(b)
                    fs.append(prev.box_scores[i])
            boxes = np.asarray(fb, np.float32).reshape(-1, 4)
            scores = np.asarray(fs, np.float32)
            if t % self.det_interval == 0:
                db, ds = self.detect(frame)
                if len(boxes) and len(db):  # followed people the detector found take its box
                    missed = box_iou(boxes, db).max(1) < self.match_iou
                    boxes, scores = boxes[missed], scores[missed]
                boxes, scores = np.concatenate([db, boxes]), np.concatenate([ds, scores])
            prev = self.estimate(frame, boxes, scores)
            yield prev


def _local(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackendUnavailable(f"{p}: no such {what} file")
    return p
