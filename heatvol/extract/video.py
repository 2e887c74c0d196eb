"""Video decoding that runs ahead of inference: a reader thread fills a bounded queue.

OpenCV's FFmpeg decoder releases the GIL, so decoding the next frames overlaps with the
pose model working on the current one (on another core).
"""

from __future__ import annotations

import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VideoError", "VideoInfo", "VideoReader", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS",
           "FramesReader", "frame_files", "open_sequence", "source_kind", "probe"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".wmv", ".flv", ".3gp", ".ts"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# FFmpeg's own messages about broken streams would flood the terminal; heatvol reports them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")



def _stop_reader(stop, thread, q) -> None:
    """Stop a decode-ahead thread: signal it, drain its queue so a blocked put returns, join."""
    stop.set()
    while thread.is_alive():
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass
    thread.join()

class VideoError(Exception):
    """A video cannot be read; the message says why (recorded as the video's failure)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frame_count: int  # the container's claim; the decoded count is what is stored
    fps: float
    width: int
    height: int


def _open(path: Path):
    import cv2

    if not path.is_file():
        raise VideoError("no such file")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError("cannot open as a video (corrupt, or not a video format FFmpeg reads)")
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container metadata; raises VideoError when the file cannot be opened."""
    import cv2

    path = Path(path)
    cap = _open(path)
    try:
        return VideoInfo(str(path), max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
                         float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
    finally:
        cap.release()


class VideoReader:
    """Iterate over a video's BGR frames [H, W, 3] uint8, decoded ahead in a thread.

    >>> reader = VideoReader("clip.mp4")
    >>> for frame in reader: ...
    >>> reader.frames_read, reader.info.fps

    Raises VideoError on open when the file is unreadable and, after iteration, when no
    frame could be decoded. A stream that breaks part-way ends at the last good frame
    (``reader.truncated`` is then True).
    """

    def __init__(self, path: str | os.PathLike, *, queue_size: int = 8):
        self.path = Path(path)
        self.info = probe(self.path)
        self.queue_size = max(1, int(queue_size))
        self.frames_read = 0
        self.shape: tuple[int, int] | None = None
        self.truncated = False

    def __iter__(self):
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        done = object()

        def run():
            cap = None
            try:
                cap = _open(self.path)
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    while not stop.is_set():
                        try:
                            q.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                q.put(exc)
            finally:
                if cap is not None:
                    cap.release()
                q.put(done)

        thread = threading.Thread(target=run, name=f"decode:{self.path.name}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise VideoError(f"decoding failed: {item}")
                if self.shape is None:
                    self.shape = item.shape[:2]
                elif item.shape[:2] != self.shape:
                    raise VideoError(f"frame size changes from {self.shape} to "
                                     f"{item.shape[:2]} at frame {self.frames_read}")
                self.frames_read += 1
                yield item
        finally:
            _stop_reader(stop, thread, q)
        if self.frames_read == 0:
            raise VideoError("no frame could be decoded (zero-frame or corrupt video)")
        if self.info.frame_count and self.frames_read < self.info.frame_count * 0.9:
            self.truncated = True


def read_all(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video, [T, H, W, 3] BGR (tests and tools)."""
    return np.stack(list(VideoReader(path)))


# --------------------------------------------------------------------------- frames and images


def _natural_key(name: str):
    """'frame2' < 'frame10': digit runs compare as numbers (zero-padded names sort as usual)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, in name order (digit runs as numbers)."""
    folder = Path(folder)
    return sorted((f for f in folder.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda f: _natural_key(f.name))


def source_kind(path: str | os.PathLike) -> str:
    """"frames" (a folder of images), "image" (one image file) or "video"."""
    p = Path(path)
    if p.is_dir():
        return "frames"
    return "image" if p.suffix.lower() in IMAGE_EXTENSIONS else "video"


class FramesReader:
    """A folder of frames (or one image) read like a video: iterate over BGR frames
    [H, W, 3] uint8 in name order, decoded ahead in a thread (cv2.imread releases the GIL).

    ``info.fps`` is 0.0 (image files carry no frame rate). Raises VideoError when the
    folder holds no image, when an image cannot be read (naming it) and when the frame
    size changes."""

    def __init__(self, path: str | os.PathLike, *, queue_size: int = 8):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = frame_files(self.path)
            if not self.files:
                raise VideoError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                                 f"in the folder")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise VideoError("no such file or folder")
        self.queue_size = max(1, int(queue_size))
        self.frames_read = 0
        self.shape: tuple[int, int] | None = None
        self.truncated = False
        self.info = VideoInfo(str(self.path), len(self.files), 0.0, 0, 0)

    def __iter__(self):
        import cv2

        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        done = object()

        def run():
            try:
                for f in self.files:
                    if stop.is_set():
                        break
                    img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                    item = img if img is not None else VideoError(
                        f"{f.name}: cannot read as an image")
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if img is None:
                        return
            finally:
                q.put(done)

        thread = threading.Thread(target=run, name=f"frames:{self.path.name}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, VideoError):
                    raise item
                if self.shape is None:
                    self.shape = item.shape[:2]
                elif item.shape[:2] != self.shape:
                    raise VideoError(f"{self.files[self.frames_read].name}: frame size "
                                     f"{item.shape[:2]} differs from the first frame's "
                                     f"{self.shape}")
                self.frames_read += 1
                yield item
        finally:
            _stop_reader(stop, thread, q)


def open_sequence(path: str | os.PathLike):
    """A reader for a video file, a folder of frames or one image (see source_kind)."""
    return VideoReader(path) if source_kind(path) == "video" else FramesReader(path)
