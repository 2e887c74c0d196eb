"""The mmpose backend: an mmdet person detector + an mmpose top-down model (HRNet by default).

PoseC3D's own extraction recipe: a detector proposes person boxes in every frame, the pose
model (HRNet-w32, COCO 256x192) estimates 17 COCO keypoints in each box; all boxes of a
frame go through the pose model as one batch. Written against the documented APIs of
mmpose 1.3 (``mmpose.apis.init_model`` / ``inference_topdown``) and mmdet 3.3
(``mmdet.apis.init_detector`` / ``inference_detector``).

An optional extra, for a side environment; it needs mmcv 2.1 with its compiled ops (PyPI
has no wheel for a recent torch: a source build, with ``setuptools<81``,
``--no-build-isolation`` and, for torch 2.14, its C++ standard raised to C++20; 52 minutes
here on 2 loaded cores), mmdet 3.3, mmpose 1.3 and a torchvision matching torch. Step by
step, and what it showed: docs/extract.md, "The mmpose route". Without checkpoints the
models keep their random initial weights (for testing the plumbing only; a warning says
so).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..layouts import layout as get_layout
from .base import Backend, BackendUnavailable, FramePoses

__all__ = ["MMPoseBackend", "INSTALL_HINT", "person_boxes", "pose_results_to_frame",
           "default_configs", "require"]

INSTALL_HINT = ('the mmpose backend needs mmpose 1.3, mmdet 3.3 and mmcv 2.1 (built from '
                'source): pip install "setuptools<81" && pip install --no-build-isolation '
                '"mmcv>=2.1,<2.2" && pip install "mmdet>=3.3" "mmpose>=1.3" (step by step: docs/extract.md, "The mmpose route")')

POSE_CONFIG = "configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
DET_CONFIG = "configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"


def require():
    """(init_detector, inference_detector, init_model, inference_topdown), or
    BackendUnavailable with the install line when mmdet / mmpose / mmcv do not import."""
    try:
        from mmdet.apis import inference_detector, init_detector
        from mmpose.apis import inference_topdown, init_model
    except ImportError as exc:
        raise BackendUnavailable(f"{INSTALL_HINT} [{exc}]") from None
    return init_detector, inference_detector, init_model, inference_topdown


def default_configs() -> tuple[str, str]:
    """(detector config, pose config) bundled inside the installed mmdet and mmpose packages
    (their ``.mim`` folders)."""
    import mmdet
    import mmpose

    det = Path(mmdet.__file__).parent / ".mim" / DET_CONFIG
    pose = Path(mmpose.__file__).parent / ".mim" / POSE_CONFIG
    for p in (det, pose):
        if not p.is_file():
            raise BackendUnavailable(f"{p}: bundled config not found; give --det-config and "
                                     f"--pose-config")
    return str(det), str(pose)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def person_boxes(pred_instances, score_thr: float, max_persons: int,
                 person_label: int = 0) -> np.ndarray:
    """mmdet ``DetDataSample.pred_instances`` (bboxes [N, 4] xyxy, scores [N], labels [N];
    tensors or arrays) -> person boxes [n, 5] (x1, y1, x2, y2, score), best first, at most
    ``max_persons``, score >= ``score_thr``."""
    boxes = _numpy(pred_instances.bboxes).reshape(-1, 4).astype(np.float32)
    scores = _numpy(pred_instances.scores).reshape(-1).astype(np.float32)
    labels = _numpy(pred_instances.labels).reshape(-1)
    keep = (labels == person_label) & (scores >= score_thr)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:max(0, int(max_persons))]
    return np.concatenate([boxes[order], scores[order, None]], axis=1)


def pose_results_to_frame(samples, num_joints: int, boxes: np.ndarray | None = None
                          ) -> FramePoses:
    """mmpose ``inference_topdown`` results (one PoseDataSample per box, with
    ``pred_instances.keypoints`` [1, K, 2] and ``keypoint_scores`` [1, K]) -> FramePoses
    (scores clipped to [0, 1]: heatmap maxima can pass 1; NaN scores are 0).

    boxes: the detector boxes [n, 5] (x1, y1, x2, y2, score) the samples were estimated in,
    one per sample, in order; they become FramePoses.boxes / box_scores, and
    person_scores = mean joint score x box score."""
    kps, scs = [], []
    for s in samples:
        inst = s.pred_instances
        kp = _numpy(inst.keypoints).astype(np.float32)
        sc = _numpy(inst.keypoint_scores).astype(np.float32)
        kp = kp.reshape(-1, kp.shape[-2], kp.shape[-1])[..., :2]
        sc = sc.reshape(-1, sc.shape[-1])
        if kp.shape[1] != num_joints:
            raise ValueError(f"the pose model gives {kp.shape[1]} keypoints; the layout "
                             f"needs {num_joints}")
        kps.append(kp)
        scs.append(sc)
    if not kps:
        return FramePoses.empty(num_joints)
    sc = np.clip(np.nan_to_num(np.concatenate(scs), nan=0.0), 0.0, 1.0).astype(np.float32)
    kp = np.concatenate(kps)
    if boxes is None:
        return FramePoses(kp, sc)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    if len(boxes) != len(kp):
        raise ValueError(f"{len(kp)} poses for {len(boxes)} boxes")
    return FramePoses(kp, sc, person_scores=sc.mean(1) * boxes[:, 4],
                      boxes=boxes[:, :4].copy(), box_scores=boxes[:, 4].copy())


class MMPoseBackend(Backend):
    """Top-down mmdet + mmpose; see the module docstring."""

    name = "mmpose"

    def __init__(self, *, layout: str = "coco17", max_persons: int = 2,
                 det_score_thr: float = 0.5, device: str = "cpu", det_config: str | None = None,
                 det_checkpoint: str | None = None, pose_config: str | None = None,
                 pose_checkpoint: str | None = None, person_label: int = 0):
        init_detector, self._inference_detector, init_model, self._inference_topdown = require()
        lay = get_layout(layout)
        if lay.name != "coco17":
            raise ValueError(f"the mmpose backend's default model gives coco17, not {lay.name}")
        self.layout = lay.name
        self.num_joints = lay.num_joints
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if det_config is None or pose_config is None:
            d, p = default_configs()
            det_config = det_config or d
            pose_config = pose_config or p
        for what, ckpt in (("detector", det_checkpoint), ("pose model", pose_checkpoint)):
            if not ckpt:
                warnings.warn(f"mmpose backend: no {what} checkpoint; its weights are random "
                              f"(plumbing test only)", stacklevel=2)
        self.detector = init_detector(str(det_config), det_checkpoint or None, device=device)
        # init_model makes "mmpose" the default registry scope, where mmdet's test pipeline
        # (PackDetInputs, ...) is not registered: inference_detector then fails with a
        # KeyError. mmpose's own demo prefixes those transforms with "mmdet." for this.
        from mmpose.utils import adapt_mmdet_pipeline

        self.detector.cfg = adapt_mmdet_pipeline(self.detector.cfg)
        self.pose_model = init_model(str(pose_config), pose_checkpoint or None, device=device)
        self.max_persons = int(max_persons)
        self.det_score_thr = float(det_score_thr)
        self.person_label = int(person_label)

    def process(self, frames):
        for frame in frames:
            det = self._inference_detector(self.detector, frame)
            boxes = person_boxes(det.pred_instances, self.det_score_thr, self.max_persons,
                                 self.person_label)
            if len(boxes) == 0:
                yield FramePoses.empty(self.num_joints)
                continue
            samples = self._inference_topdown(self.pose_model, frame, boxes[:, :4],
                                              bbox_format="xyxy")
            yield pose_results_to_frame(samples, self.num_joints, boxes)
