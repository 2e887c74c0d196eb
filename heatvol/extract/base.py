"""What every pose backend gives: per-frame people, before tracking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Backend", "BackendUnavailable", "FramePoses"]


class BackendUnavailable(RuntimeError):
    """A backend's packages or models are missing; the message says how to install them."""


@dataclass
class FramePoses:
    """The people found in one frame, in no particular order.

    keypoints float32 [n, K, 2] full-frame pixels; scores float32 [n, K] in [0, 1].
    Optional, where the backend has them: person_scores float32 [n] (how sure the backend is
    of each person, used to rank people in COCO evaluation), boxes float32 [n, 4] (x1, y1,
    x2, y2) the person boxes the poses were estimated in, box_scores float32 [n].
    """

    keypoints: np.ndarray
    scores: np.ndarray
    person_scores: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_scores: np.ndarray | None = None

    @staticmethod
    def empty(num_joints: int) -> FramePoses:
        return FramePoses(np.zeros((0, num_joints, 2), np.float32),
                          np.zeros((0, num_joints), np.float32))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


class Backend:
    """A pose estimator: ``process(frames)`` yields one FramePoses per BGR frame [H, W, 3]
    uint8 of one video, in order (it may read ahead to batch). ``layout`` names the joints."""

    name = "base"
    layout = "coco17"

    def process(self, frames: Iterable[np.ndarray]) -> Iterator[FramePoses]:
        raise NotImplementedError

    def close(self) -> None:
        pass
