"""Top-down multi-person pose estimation with ONNX models: person detector -> boxes -> a
single-person pose model on each box's crop -> keypoints in frame pixels.

Backend ``topdown`` (the default of ``heatvol extract``). Presets (``PRESETS``):

- ``accurate``: NanoDet (416x416, COCO person class) + MoveNet SinglePose Thunder (256x256);
- ``fast``: NanoDet + MoveNet SinglePose Lightning (192x192), the detector every 3rd frame.

Per frame (BGR uint8 [H, W, 3]):

1. **Detect** (every ``det_interval`` frames, and on the first): NanoDet on the frame
   letterboxed to 416x416 (ImageNet mean/std, BGR: measured, see docs/extract.md), boxes
   decoded as NanoDet's generalised-focal-loss heads define them (softmax over 11 bins per
   side, expectation x stride from the cell centre), person score >= ``det_score_thr``,
   greedy NMS at IoU ``nms_iou``, boxes shorter than ``min_box`` pixels dropped.
2. **Follow**: between detector runs, each person's box is the box around its keypoints of
   the previous frame (joints with score >= ``kp_thr``), padded. On a detector frame,
   followed people the detector matches (IoU >= ``match_iou``) take the detector's box;
   followed people it misses are kept (occlusion, motion blur) as long as their pose score
   stays >= ``min_pose_score``; unmatched detections are new people.
3. **Pose** per box: a square crop of ``crop_scale`` x the box's longer side, centred on the
   box, warped from the full-resolution frame (``cv2.warpAffine``; outside the frame is
   black), MoveNet gives (y, x, score) per COCO-17 joint in [0, 1] of the crop; mapped back
   to frame pixels by ``crop_to_frame``.
   Boxes are taken best first; an unsure box (score < ``sure_score``) lying mostly inside
   the joints' box of a person already found in the frame is skipped, and on video an
   unsure box that gave no person is not tried again for ``recheck`` frames.
4. **Deduplicate**: two people whose visible joints coincide (median distance < ``dup_dist``
   x the person's size) are one; the one with the higher pose score is kept.

Pose score of a person = mean joint score x detector score (followed people keep their last
detector score). ``FramePoses.person_scores`` carries it (COCO evaluation ranks by it).
Tracking across frames is ``tracking.track_poses``, as for every backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .base import Backend, BackendUnavailable, FramePoses
from .tracking import box_iou
from .weights import locate

__all__ = ["TopDownBackend", "TopDownConfig", "PRESETS", "NanoDetDetector", "MoveNetPose",
           "nms", "filter_boxes", "crop_params", "crop_to_frame", "frame_to_crop",
           "ort_session", "keypoint_box"]

NANODET_MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)


@dataclass(frozen=True)
class TopDownConfig:
    """Everything that decides what the top-down backend finds (see the module docstring)."""

    detector: str = "nanodet"
    pose: str = "movenet-thunder"
    det_score_thr: float = 0.15
    nms_iou: float = 0.6
    min_box: float = 16.0  # pixels, the box's longer side
    max_people: int = 60  # per frame, best detector scores first
    det_interval: int = 1
    crop_scale: float = 1.25
    kp_thr: float = 0.2
    match_iou: float = 0.4
    min_pose_score: float = 0.2
    dup_dist: float = 0.1
    skip_inside: float = 0.8
    sure_score: float = 0.3
    recheck: int = 10  # frames before a weak unsure box is tried again (video)


PRESETS: dict[str, TopDownConfig] = {
    "accurate": TopDownConfig(),
    "fast": TopDownConfig(pose="movenet-lightning", det_interval=3),
}


# --------------------------------------------------------------------------- onnxruntime


def ort_session(path: str | os.PathLike, device: str = "cpu", num_threads: int | None = None):
    """An onnxruntime InferenceSession on ``device`` ("cpu" or "cuda").

    cuda needs onnxruntime's CUDA provider (the onnxruntime-gpu package); without it this
    raises BackendUnavailable rather than running on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)") \
            from None
    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = int(num_threads)
    opts.log_severity_level = 3
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(
                "--device cuda: onnxruntime has no CUDA provider here (providers: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu in "
                "place of onnxruntime, or use --device cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    return ort.InferenceSession(str(path), opts, providers=providers)


# --------------------------------------------------------------------------- boxes


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy non-maximum suppression. boxes float [n, 4] (x1, y1, x2, y2), scores [n].
    Returns the kept indices int64 [k], highest score first: a box is dropped when its IoU
    with a kept higher-scoring box is > iou_thr."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, np.int64)


def filter_boxes(boxes: np.ndarray, scores: np.ndarray, *, score_thr: float, iou_thr: float,
                 min_size: float, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Score threshold, then NMS, then drop boxes whose longer side is < min_size, then keep
    the max_boxes best. Returns (boxes float32 [k, 4], scores float32 [k]), best first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    ok = np.isfinite(scores) & np.isfinite(boxes).all(1) & (scores >= score_thr)
    boxes, scores = boxes[ok], scores[ok]
    keep = nms(boxes, scores, iou_thr)
    boxes, scores = boxes[keep], scores[keep]
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    big = side >= min_size
    return boxes[big][:max_boxes], scores[big][:max_boxes]


def keypoint_box(keypoints: np.ndarray, scores: np.ndarray, thr: float,
                 pad: float = 0.1) -> np.ndarray | None:
    """The box (x1, y1, x2, y2) around one person's joints with score >= thr, padded by
    ``pad`` x its size on each side; None when fewer than 2 joints pass."""
    sel = scores >= thr
    if sel.sum() < 2:
        return None
    pts = keypoints[sel]
    lo, hi = pts.min(0), pts.max(0)
    size = hi - lo
    m = pad * np.maximum(size, size.max() * 0.25)
    return np.concatenate([lo - m, hi + m]).astype(np.float32)


# --------------------------------------------------------------------------- crops


def crop_params(boxes: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Square crops around boxes [n, 4]: (centres float32 [n, 2] (x, y), sides float32 [n]),
    side = scale x the box's longer side (at least 1 pixel)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale,
                      1.0)
    return centre.astype(np.float32), side.astype(np.float32)


def crop_to_frame(points: np.ndarray, centre: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Points in [0, 1] crop coordinates (x, y) [n, K, 2] -> frame pixels [n, K, 2]; crop i
    covers the square of side side[i] centred on centre[i]."""
    c = np.asarray(centre, np.float64)[:, None, :]
    s = np.asarray(side, np.float64)[:, None, None]
    return (c - s / 2 + np.asarray(points, np.float64) * s).astype(np.float32)


def frame_to_crop(points: np.ndarray, centre: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The inverse of crop_to_frame: frame pixels [n, K, 2] -> [0, 1] crop coordinates."""
    c = np.asarray(centre, np.float64)[:, None, :]
    s = np.asarray(side, np.float64)[:, None, None]
    return ((np.asarray(points, np.float64) - c + s / 2) / s).astype(np.float32)


def warp_crop(frame: np.ndarray, centre: np.ndarray, side: float, size: int) -> np.ndarray:
    """The square [size, size, 3] crop of ``frame`` covering side x side pixels around
    centre, so that crop pixel (u, v) samples the frame at centre - side/2 + (u, v) * side /
    size (the [0, 1] coordinate u/size maps by crop_to_frame)."""
    import cv2

    k = size / float(side)
    x0, y0 = float(centre[0]) - side / 2, float(centre[1]) - side / 2
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float64)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


# --------------------------------------------------------------------------- models


class NanoDetDetector:
    """NanoDet (COCO, 416x416) as a person detector.

    ``detect(frame)`` -> (boxes float32 [n, 4] (x1, y1, x2, y2) frame pixels, person scores
    float32 [n]), all cells before thresholding/NMS (see ``filter_boxes``)."""

    size = 416
    strides = (8, 16, 32)
    bins = 11

    def __init__(self, path, device="cpu", num_threads=None):
        self.session = ort_session(path, device, num_threads)
        self.input = self.session.get_inputs()[0].name
        outs = self.session.get_outputs()
        self.outputs = [o.name for o in outs]
        # Outputs are matched to strides by their cell counts (the converted graph's
        # output order is not stride order).
        by_shape = {}
        for o in outs:
            by_shape[(int(o.shape[1]), int(o.shape[2]))] = o.name
        self.heads = []
        for s in self.strides:
            cells = (self.size // s) ** 2
            try:
                self.heads.append((s, by_shape[(cells, 80)], by_shape[(cells, 4 * self.bins)]))
            except KeyError:
                raise BackendUnavailable(f"{path}: not the NanoDet 416 graph heatvol expects "
                                         f"(no {cells}-cell outputs)") from None
        n = self.size
        self._centres = {}
        for s in self.strides:
            g = n // s
            cy, cx = np.divmod(np.arange(g * g), g)
            self._centres[s] = np.stack([(cx + 0.5) * s, (cy + 0.5) * s], 1).astype(np.float32)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = frame.shape[:2]
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA
                                      if scale < 1 else cv2.INTER_LINEAR)
        x = (canvas.astype(np.float32) - NANODET_MEAN_BGR) / NANODET_STD_BGR
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), scale

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, scale = self.preprocess(frame)
        res = dict(zip(self.outputs, self.session.run(self.outputs, {self.input: x})))
        boxes, scores = [], []
        proj = np.arange(self.bins, dtype=np.float32)
        for s, cls_name, reg_name in self.heads:
            cls = res[cls_name][0, :, 0]  # person; the graph's scores are already sigmoids
            cand = np.nonzero(cls >= 0.05)[0]
            if cand.size == 0:
                continue
            reg = res[reg_name][0, cand].reshape(-1, 4, self.bins)
            e = np.exp(reg - reg.max(-1, keepdims=True))
            dist = (e / e.sum(-1, keepdims=True) @ proj) * s  # [n, 4] l, t, r, b
            c = self._centres[s][cand]
            boxes.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], 1) / scale)
            scores.append(cls[cand])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        b = np.concatenate(boxes).astype(np.float32)
        h, w = frame.shape[:2]
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return b, np.concatenate(scores).astype(np.float32)


class MoveNetPose:
    """MoveNet SinglePose (Thunder 256 / Lightning 192) on square crops.

    ``estimate(frame, centres, sides)`` -> (keypoints float32 [n, 17, 2] frame pixels (x, y),
    scores float32 [n, 17]). The converted graphs take one crop per run (batch fixed to 1),
    so crops run one after another."""

    def __init__(self, path, device="cpu", num_threads=None):
        self.session = ort_session(path, device, num_threads)
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        self.size = int(inp.shape[1])
        self.output = self.session.get_outputs()[0].name

    def estimate(self, frame: np.ndarray, centres: np.ndarray, sides: np.ndarray):
        n = len(sides)
        yx = np.zeros((n, 17, 3), np.float32)
        for i in range(n):
            crop = warp_crop(frame, centres[i], float(sides[i]), self.size)
            x = crop[None, :, :, ::-1].astype(np.int32)  # RGB 0-255
            yx[i] = self.session.run([self.output], {self.input: x})[0].reshape(17, 3)
        kp = crop_to_frame(yx[:, :, 1::-1], centres, sides)
        return kp, np.clip(yx[:, :, 2], 0.0, 1.0)


# --------------------------------------------------------------------------- backend


def _dedup(kp: np.ndarray, sc: np.ndarray, person: np.ndarray, thr: float,
           dup_dist: float) -> np.ndarray:
    """Indices of the people to keep, best person score first: a person whose visible joints
    lie within dup_dist x its size (median) of a kept person's is a duplicate."""
    order = np.argsort(-person, kind="stable")
    kept: list[int] = []
    for i in order:
        dup = False
        for j in kept:
            both = (sc[i] >= thr) & (sc[j] >= thr)
            if both.sum() < 3:
                continue
            pts = kp[j][sc[j] >= thr]
            size = float(np.hypot(*(pts.max(0) - pts.min(0)))) or 1.0
            if np.median(np.linalg.norm(kp[i][both] - kp[j][both], axis=1)) < dup_dist * size:
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def _inside(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The fraction of ``box``'s area [4] inside each of ``others`` [n, 4] -> [n]."""
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = float(np.prod(np.clip(box[2:] - box[:2], 0, None)))
    return inter / max(area, 1e-9)


class TopDownBackend(Backend):
    """Detector + single-person pose model (see the module docstring).

    preset: a key of PRESETS; overrides: TopDownConfig fields (None = the preset's).
    models_dir: where the model files are (weights.locate); device: cpu or cuda."""

    name = "topdown"
    layout = "coco17"

    def __init__(self, preset: str = "accurate", *, models_dir=None, device: str = "cpu",
                 num_threads: int | None = None, layout: str = "coco17", **overrides):
        if layout != "coco17":
            raise ValueError(f"the topdown backend gives coco17 keypoints, not {layout}")
        if preset not in PRESETS:
            raise ValueError(f"unknown topdown preset {preset!r}; known: {', '.join(PRESETS)}")
        fields = TopDownConfig.__dataclass_fields__
        bad = [k for k in overrides if k not in fields]
        if bad:
            raise TypeError(f"unknown topdown option(s): {', '.join(bad)}")
        cfg = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
        if cfg.det_interval < 1:
            raise ValueError(f"det_interval must be >= 1, got {cfg.det_interval}")
        self.preset, self.config, self.device = preset, cfg, device
        self.detector_path: Path = locate(cfg.detector, models_dir)
        self.pose_path: Path = locate(cfg.pose, models_dir)
        if cfg.detector != "nanodet" or not cfg.pose.startswith("movenet-"):
            raise ValueError(f"topdown runs nanodet + movenet-thunder/lightning, got "
                             f"{cfg.detector} + {cfg.pose}")
        self.detector = NanoDetDetector(self.detector_path, device, num_threads)
        self.pose = MoveNetPose(self.pose_path, device, num_threads)

    def describe(self) -> dict:
        """What ran (recorded in the store's attrs)."""
        return {"backend": self.name, "preset": self.preset, "device": self.device,
                "detector": self.detector_path.name, "pose": self.pose_path.name,
                "det_interval": self.config.det_interval,
                "det_score_thr": self.config.det_score_thr}

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [n, 4] and scores [n] after threshold, NMS and minimum size."""
        c = self.config
        b, s = self.detector.detect(frame)
        return filter_boxes(b, s, score_thr=c.det_score_thr, iou_thr=c.nms_iou,
                            min_size=c.min_box, max_boxes=c.max_people)

    def estimate(self, frame: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray,
                 rejected: list | None = None, t: int = 0) -> FramePoses:
        """Poses of the people in ``boxes`` (deduplicated, weak poses dropped).

        rejected: on video, a list of unsure boxes whose pose was too weak in a recent
        frame; unsure boxes matching one (IoU >= 0.7) are skipped, and this frame's weak
        unsure boxes are appended to it as (box, t) (``process`` ages the list)."""
        c = self.config
        if len(boxes) == 0:
            return FramePoses.empty(17)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        box_scores = np.asarray(box_scores, np.float32).reshape(-1)
        order = np.argsort(-box_scores, kind="stable")
        boxes, box_scores = boxes[order], box_scores[order]
        centres, sides = crop_params(boxes, c.crop_scale)
        # Boxes best first; an unsure box (detector score < sure_score) lying mostly inside
        # the box around the joints of a person already found in this frame (>= skip_inside
        # of its area) is not estimated: the pose model would mostly find that person again
        # (the duplicate check below would drop it), and at a low detector threshold such
        # part-of-a-person boxes are most boxes.
        n = len(boxes)
        kp = np.zeros((n, 17, 2), np.float32)
        sc = np.zeros((n, 17), np.float32)
        ran = np.zeros(n, bool)
        found: list[np.ndarray] = []
        for i in range(n):
            unsure = box_scores[i] < c.sure_score
            if unsure and found and _inside(boxes[i], np.stack(found)).max() >= c.skip_inside:
                continue
            if unsure and rejected and \
                    box_iou(boxes[i:i + 1], np.stack([r[0] for r in rejected])).max() >= 0.7:
                continue
            k, s = self.pose.estimate(frame, centres[i:i + 1], sides[i:i + 1])
            kp[i], sc[i], ran[i] = k[0], s[0], True
            kb = keypoint_box(k[0], s[0], c.kp_thr)
            if kb is not None and s[0].mean() >= c.min_pose_score:
                found.append(kb)
            elif unsure and rejected is not None:
                rejected.append((boxes[i], t))
        person = sc.mean(1) * box_scores
        good = np.nonzero(ran & (sc.mean(1) >= c.min_pose_score))[0]
        keep = good[_dedup(kp[good], sc[good], person[good], c.kp_thr, c.dup_dist)]
        return FramePoses(kp[keep], sc[keep], person_scores=person[keep],
                          boxes=boxes[keep], box_scores=box_scores[keep])

    def process_image(self, frame: np.ndarray) -> FramePoses:
        boxes, scores = self.detect(frame)
        return self.estimate(frame, boxes, scores)

    def process(self, frames: Iterable[np.ndarray]) -> Iterator[FramePoses]:
        c = self.config
        prev: FramePoses | None = None
        # Unsure boxes that gave no person (a loudspeaker, a chair: the detector finds the
        # same ones frame after frame at the low threshold) are not tried again for
        # ``recheck`` frames.
        rejected: list = []
        for t, frame in enumerate(frames):
            rejected[:] = [r for r in rejected if t - r[1] < c.recheck]
            followed, followed_scores = [], []
            if prev is not None:
                for i in range(len(prev)):
                    b = keypoint_box(prev.keypoints[i], prev.scores[i], c.kp_thr)
                    if b is not None:
                        followed.append(b)
                        followed_scores.append(prev.box_scores[i])
            fb = np.asarray(followed, np.float32).reshape(-1, 4)
            fs = np.asarray(followed_scores, np.float32)
            if t % c.det_interval == 0:
                db, ds = self.detect(frame)
                if len(fb) and len(db):
                    iou = box_iou(fb, db)
                    missed = iou.max(1) < c.match_iou
                    fb, fs = fb[missed], fs[missed]
                boxes = np.concatenate([db, fb])
                scores = np.concatenate([ds, fs])
            else:
                boxes, scores = fb, fs
            prev = self.estimate(frame, boxes, scores, rejected, t)
            yield prev
