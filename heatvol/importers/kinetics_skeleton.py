"""ST-GCN's Kinetics-skeleton release (Yan et al., AAAI 2018): one JSON per video.

OpenPose 18-joint 2D poses of the Kinetics-400 videos, resized to 340x256 at 30 fps::

    {"data": [{"frame_index": 1,                          # 1-based
               "skeleton": [{"pose": [x0, y0, x1, y1, ...],  # 18 joints, normalised to [0, 1]
                             "score": [s0, ..., s17]},      # OpenPose confidences
                            ...]},                          # persons, not tracked over frames
              ...],
     "label": "playing piano", "label_index": 244}

Import (layout ``openpose18``, 2D):

- Pixels: the release divides by the size of the resized video, so keypoints =
  float32(pose * (340, 256)) and img_shape = (256, 340) (H, W). Joints with score 0 are
  missing: their coordinates are stored as 0 (ST-GCN's feeder zeroes them too).
- Persons, as ST-GCN's Kinetics feeder (``feeder_kinetics.py``, ``num_person_in=5``,
  ``num_person_out=2``): in each frame, the first 5 listed persons are ranked by summed joint
  score (stable: ties keep their order) and the best 2 are kept, so person 0 is each frame's
  most confident skeleton. (The release does not track people: the ranking is per frame, not
  over the video.) M = the most persons kept in any frame (0, 1 or 2).
- T = the largest ``frame_index``; frames absent from ``data`` are zeros with score 0. A
  video with no frames (``"data": []``, about 1 in 30 of the release) is a problem.
- Labels: ``label_index`` (-1 when absent or negative). Classes are named from the
  (``label_index``, ``label``) pairs seen, in index order; indices never seen are
  ``class_N``; one index with two names is a problem.
- Splits: when ``src`` has ``kinetics_train/`` and ``kinetics_val/`` subfolders (the release
  layout), both are imported as splits ``train`` and ``val``; otherwise the ``*.json`` files
  of ``src`` are imported without splits.
- fps 30. Names are the file stems (YouTube ids); ``source`` is the path below ``src``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..store import PoseRecord
from . import Entry, ImportFailed, Source, SourceProblem, check_layout, list_files

NUM_JOINTS = 18
WIDTH, HEIGHT = 340, 256
PERSONS_CONSIDERED = 5  # ST-GCN's num_person_in
PERSONS_KEPT = 2        # ST-GCN's num_person_out
FPS = 30.0
SPLIT_FOLDERS = (("train", "kinetics_train"), ("val", "kinetics_val"))


def open_source(src: Path, *, layout: str | None = None) -> Source:
    src = Path(src)
    if not src.is_dir():
        raise ImportFailed(f"{src}: no such folder")
    entries = []
    if all((src / folder).is_dir() for _, folder in SPLIT_FOLDERS):
        split_names: tuple[str, ...] = tuple(split for split, _ in SPLIT_FOLDERS)
        for split, folder in SPLIT_FOLDERS:
            for path in sorted(p for p in (src / folder).glob("*.json") if p.is_file()):
                entries.append(Entry(name=path.stem, where=str(path), splits=(split,),
                                     payload=(path, f"{folder}/{path.name}")))
        if not entries:
            raise ImportFailed(f"{src}: no *.json files in kinetics_train/ or kinetics_val/")
    else:
        split_names = ()
        entries = [Entry(name=p.stem, where=str(p), splits=(), payload=(p, p.name))
                   for p in list_files(src, "*.json")]
    return Source(layout=check_layout("kinetics-skeleton", "openpose18", layout), dims=2,
                  entries=entries, load=load_entry, classes=None, split_names=split_names)


def load_entry(entry: Entry) -> PoseRecord:
    path, source = entry.payload
    with open(path, "rb") as f:
        doc = json.load(f)
    keypoints, scores = video_to_arrays(doc)
    label, class_name = -1, None
    index = doc.get("label_index")
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        label = index
        if isinstance(doc.get("label"), str) and doc["label"]:
            class_name = doc["label"]
    return PoseRecord(name=entry.name, keypoints=keypoints, scores=scores, label=label,
                      img_shape=(HEIGHT, WIDTH), fps=FPS, source=source, class_name=class_name)


def video_to_arrays(doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """A parsed video JSON -> (keypoints float32 [M, T, 18, 2] pixels, scores float32
    [M, T, 18]); persons chosen per frame as in the module docstring."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise SourceProblem("no 'data' list")
    per_frame: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, frame in enumerate(doc["data"]):
        if not isinstance(frame, dict):
            raise SourceProblem(f"data[{i}] is not an object")
        index = frame.get("frame_index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 1:
            raise SourceProblem(f"data[{i}]: frame_index {index!r} is not an int >= 1")
        if index in per_frame:
            raise SourceProblem(f"data[{i}]: frame_index {index} appears twice")
        persons = []
        for j, person in enumerate((frame.get("skeleton") or [])[:PERSONS_CONSIDERED]):
            try:
                pose = np.asarray(person["pose"], dtype=np.float64)
                score = np.asarray(person["score"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise SourceProblem(f"frame {index} person {j}: bad pose/score ({exc!r})") from None
            if pose.shape != (2 * NUM_JOINTS,) or score.shape != (NUM_JOINTS,):
                raise SourceProblem(f"frame {index} person {j}: pose has {pose.size} values and "
                                    f"score {score.size}, expected {2 * NUM_JOINTS} and "
                                    f"{NUM_JOINTS}")
            persons.append((pose.reshape(NUM_JOINTS, 2), score))
        # Most confident first; sorted() is stable, so ties keep the listed order.
        persons.sort(key=lambda p: -float(p[1].sum()))
        per_frame[index] = persons[:PERSONS_KEPT]
    if not per_frame:
        raise SourceProblem("no frames (the video has no skeleton data)")

    num_frames = max(per_frame)
    num_persons = max(len(p) for p in per_frame.values())
    keypoints = np.zeros((num_persons, num_frames, NUM_JOINTS, 2), np.float32)
    scores = np.zeros((num_persons, num_frames, NUM_JOINTS), np.float32)
    scale = np.array([WIDTH, HEIGHT], np.float64)
    for index, persons in per_frame.items():
        for m, (pose, score) in enumerate(persons):
            pixels = pose * scale
            pixels[score == 0] = 0.0  # missing joints: coordinates 0 as well
            keypoints[m, index - 1] = pixels
            scores[m, index - 1] = score
    return keypoints, scores
