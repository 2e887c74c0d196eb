"""Northwestern-UCLA Multiview Action 3D (Wang et al., CVPR 2014): a folder of JSON skeletons.

One JSON per sequence, in the layout CTR-GCN's loader reads::

    {"file_name": "a01_s01_e00_v01",      # action, subject, take (episode), view
     "skeletons": [[[x, y, z] * 20] * T], # Kinect v1 joints, metres
     "label": 1}                          # 1-based class index (1..10), despite some docs

- Layout ``kinect20``, 3D: keypoints float32 [1, T, 20, 3] = the JSON numbers (float32).
  Scores: 1, except 0 for a joint at exactly (0, 0, 0) (a hole in the Kinect data; 12 joints
  in the public copy), see ``heatvol.importers``.
- Classes (10, in action-id order): the label comes from the action id in the file name;
  the JSON ``label`` must equal that index + 1 (it is 1-based), else the file is a problem.
- Splits, the standard cross-view protocol: ``train`` = views v01 + v02 (1,020 sequences),
  ``test`` = view v03 (464).
- img_shape None (3D), fps 30 (Kinect v1 records at 30 fps; the files do not say).
- Names are the file stems; ``file_name``, when present, must equal the stem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..store import PoseRecord
from . import (Entry, Source, SourceProblem, check_layout, list_files,
               scores_from_zero_rule)

#: action id -> class name, in action-id order (ids 7 and 10 are not in the dataset).
ACTIONS: dict[int, str] = {
    1: "pick up with one hand", 2: "pick up with two hands", 3: "drop trash", 4: "walk around",
    5: "sit down", 6: "stand up", 8: "donning", 9: "doffing", 11: "throw", 12: "carry"}
CLASSES: tuple[str, ...] = tuple(ACTIONS.values())
_LABEL_OF_ACTION = {action: i for i, action in enumerate(ACTIONS)}
_SPLIT_OF_VIEW = {1: "train", 2: "train", 3: "test"}
_NAME_RE = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})$")
NUM_JOINTS = 20
FPS = 30.0


def open_source(src: Path, *, layout: str | None = None) -> Source:
    files = list_files(src, "*.json")
    entries, problems = [], []
    for path in files:
        try:
            label, split = parse_name(path.stem)
        except SourceProblem as exc:
            problems.append(f"{path}: {exc}")
            continue
        entries.append(Entry(name=path.stem, where=str(path), splits=(split,),
                             payload=(path, label)))
    return Source(layout=check_layout("nw-ucla", "kinect20", layout), dims=3, entries=entries,
                  load=load_entry, classes=list(CLASSES), split_names=("train", "test"),
                  problems=problems)


def parse_name(stem: str) -> tuple[int, str]:
    """``aXX_sYY_eZZ_vWW`` -> (label, split)."""
    m = _NAME_RE.match(stem)
    if not m:
        raise SourceProblem("file name is not aXX_sYY_eZZ_vWW")
    action, view = int(m.group(1)), int(m.group(4))
    if action not in _LABEL_OF_ACTION:
        raise SourceProblem(f"unknown action id a{action:02d}")
    if view not in _SPLIT_OF_VIEW:
        raise SourceProblem(f"unknown view v{view:02d} (expected v01, v02 or v03)")
    return _LABEL_OF_ACTION[action], _SPLIT_OF_VIEW[view]


def load_entry(entry: Entry) -> PoseRecord:
    path, label = entry.payload
    with open(path, "rb") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or "skeletons" not in doc:
        raise SourceProblem("no 'skeletons' field")
    file_name = doc.get("file_name")
    if file_name is not None and file_name != path.stem:
        raise SourceProblem(f"file_name {file_name!r} differs from the file's name")
    if "label" in doc and doc["label"] != label + 1:
        raise SourceProblem(f"label field {doc['label']!r} disagrees with the action id in the "
                            f"name (expected {label + 1}: the field is 1-based)")
    try:
        joints = np.asarray(doc["skeletons"], dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise SourceProblem(f"skeletons is not a [T][20][3] array ({exc})") from None
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise SourceProblem(f"skeletons has shape {list(joints.shape)}, expected [T, 20, 3]")
    if joints.shape[0] < 1:
        raise SourceProblem("no frames")
    keypoints = joints.astype(np.float32)[None]
    return PoseRecord(name=entry.name, keypoints=keypoints,
                      scores=scores_from_zero_rule(keypoints), label=label, img_shape=None,
                      fps=FPS, source=path.name)
