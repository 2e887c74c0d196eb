"""Pictures of poses and volumes: skeleton frames, heatmap frames, strips and GIFs.

Everything returns or consumes RGB uint8 frames [H, W, 3]; ``save_frames`` writes a strip
(``.png``, frames side by side in a grid) or an animation (``.gif``).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from .layouts import Layout

LEFT, RIGHT, CENTRE = (230, 120, 40), (40, 140, 230), (70, 190, 90)  # RGB


def _side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


def limb_colour(layout: Layout, a: int, b: int) -> tuple[int, int, int]:
    """Left limbs orange, right limbs blue, the trunk and head green."""
    sides = {_side(layout.joints[a]), _side(layout.joints[b])}
    if sides == {"left"} or sides == {"left", "centre"}:
        return LEFT
    if sides == {"right"} or sides == {"right", "centre"}:
        return RIGHT
    return CENTRE


def draw_skeletons(keypoints: np.ndarray, scores: np.ndarray, layout: Layout,
                   img_shape: tuple[int, int], *, width: int = 320,
                   background: np.ndarray | None = None, min_score: float = 1e-3) -> list[np.ndarray]:
    """Draw every person's skeleton on each frame.

    keypoints float32 [M, T, K, 2] pixels of an (H, W) frame, scores [M, T, K].
    background: optional frames [T, H, W, 3] RGB uint8 to draw on (e.g. the video).
    Returns T RGB uint8 frames, ``width`` pixels wide (aspect kept).
    """
    h, w = img_shape
    scale = width / w
    out_h = max(1, int(round(h * scale)))
    m, t = keypoints.shape[:2]
    frames = []
    thick = max(1, int(round(width / 160)))
    for f in range(t):
        if background is not None:
            img = cv2.resize(np.ascontiguousarray(background[f]), (width, out_h),
                             interpolation=cv2.INTER_AREA)
        else:
            img = np.full((out_h, width, 3), 250, np.uint8)
        for p in range(m):
            pts = keypoints[p, f] * scale
            ok = (scores[p, f] >= min_score) & np.isfinite(pts).all(-1)
            for a, b in layout.limbs:
                if ok[a] and ok[b]:
                    cv2.line(img, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]),
                             limb_colour(layout, a, b), thick + 1, cv2.LINE_AA)
            for j in np.flatnonzero(ok):
                cv2.circle(img, tuple(int(v) for v in pts[j]), thick + 1, (40, 40, 40), -1,
                           cv2.LINE_AA)
            if ok.any():  # person index at the head, so tracking can be checked by eye
                top = pts[ok][np.argmin(pts[ok][:, 1])]
                cv2.putText(img, str(p), (int(top[0]) + 4, max(12, int(top[1]) - 6)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4 + width / 1600, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"t={f}", (4, out_h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35 + width / 2000,
                    (90, 90, 90), 1, cv2.LINE_AA)
        frames.append(img)
    return frames


def channel_colours(num_channels: int) -> np.ndarray:
    """float32 [C, 3] distinct hues in [0, 1]."""
    return np.array([colorsys.hsv_to_rgb(i / max(num_channels, 1), 0.85, 1.0)
                     for i in range(num_channels)], np.float32)


def volume_frames(volume: np.ndarray, *, scale: int = 4) -> list[np.ndarray]:
    """A heatmap volume [C, T, H, W] (float in [0, 1] or uint8 ×255) → T RGB uint8 frames.

    Channels are combined by colouring each with its own hue and taking the maximum, so joints
    (or limbs) stay distinguishable; frames are enlarged ``scale`` times (nearest neighbour).
    """
    vol = volume.astype(np.float32)
    if volume.dtype == np.uint8:
        vol /= 255.0
    c, t, h, w = vol.shape
    colours = channel_colours(c)
    # [T, H, W, C] x [C, 3] -> per channel coloured, max over channels
    coloured = vol.transpose(1, 2, 3, 0)[..., None] * colours[None, None, None]
    rgb = np.clip(coloured.max(axis=3), 0, 1)
    frames = (rgb * 255 + 0.5).astype(np.uint8)
    return [cv2.resize(f, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) for f in frames]


def pick_frames(num_frames: int, count: int) -> np.ndarray:
    """``count`` evenly spaced frame indices out of ``num_frames``."""
    if num_frames <= count:
        return np.arange(num_frames)
    return np.linspace(0, num_frames - 1, count).round().astype(int)


def save_frames(frames: list[np.ndarray], path: str | Path, *, columns: int = 8,
                fps: float = 10.0, title: str | None = None) -> Path:
    """``.png``: a grid strip of the frames (with an optional title bar); ``.gif``: animation."""
    from PIL import Image

    path = Path(path)
    if not frames:
        raise ValueError("no frames to save")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:],
                       duration=max(20, int(1000 / fps)), loop=0)
        return path
    if suffix != ".png":
        raise ValueError(f"{path}: output must end in .png or .gif")
    h, w = frames[0].shape[:2]
    cols = min(columns, len(frames))
    rows = -(-len(frames) // cols)
    pad = 4
    bar = 24 if title else 0
    sheet = np.full((bar + rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = bar + pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = f
    if title:
        cv2.putText(sheet, title, (pad, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    Image.fromarray(sheet).save(path)
    return path
