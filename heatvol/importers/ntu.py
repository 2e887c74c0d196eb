"""NTU RGB+D 60 / 120 (Shahroudy et al. 2016; Liu et al. 2019): a folder of ``.skeleton`` files.

File name ``SsssCcccPpppRrrrAaaa.skeleton``: setup, camera, performer (subject), replication,
action (all 1-based). The file is text, one record per line, whitespace-separated::

    frameCount
    per frame:
        bodyCount
        per body:
            bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence
                handRightState isRestricted leanX leanY trackingState       (10 values)
            jointCount                                                      (25)
            per joint:
                x y z depthX depthY colorX colorY orientationW orientationX orientationY
                    orientationZ trackingState                              (12 values)

Import (layout ``ntu25``, 3D, x, y, z in metres, camera coordinates):

- Bodies are told apart by ``bodyID`` (the Kinect tracking id). At most 2 are kept: the two
  with the most "energy", as MS-G3D's ``ntu_gendata.py`` ranks them: for each body, over the
  frames where it is present, the standard deviation (over frames and joints) of x, of y and
  of z, summed. Ties keep the body that appears first. The kept bodies are stored in that
  order (most energy first), so M = the number of distinct bodies kept (2, 1, or 0 when no
  frame has a body). MS-G3D itself takes "body m" to be the m-th body listed in each frame
  (ignoring bodyID); tracking by bodyID keeps one person's frames together.
- keypoints float32 [M, T, 25, 3] (T = frameCount); a frame where a body is absent is zeros
  with score 0; present joints have score 1 (joint trackingState is not used), except a joint
  at exactly (0, 0, 0), which is missing (score 0).
- label = action - 1 (A001 -> 0). Classes are the action codes ``"A001"`` ... ``"A060"``, or
  ... ``"A120"`` when the folder holds NTU120 files (an action id > 60 or a setup id > 17);
  the full NTU action names are long and are not in the files.
- Splits (from the file name): ``xsub_train``/``xsub_val`` (training subjects: the standard
  list; NTU60's 20 are the first 20 of NTU120's 53), ``xview_train``/``xview_val`` (training
  cameras 2 and 3), and for NTU120 folders ``xset_train``/``xset_val`` (even setup ids train).
- img_shape None, fps 30 (Kinect v2). Names are the file stems; ``source`` the file name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..store import PoseRecord
from . import (Entry, Source, SourceProblem, check_layout, list_files,
               scores_from_zero_rule)

NUM_JOINTS = 25
MAX_BODIES = 2
FPS = 30.0
#: NTU RGB+D 120 cross-subject training subjects (NTU60's are those <= 40, its first 20).
XSUB_TRAIN_SUBJECTS = frozenset((
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49,
    50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92,
    93, 94, 95, 97, 98, 100, 103))
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


def parse_name(stem: str) -> dict[str, int]:
    """``S001C002P003R002A013`` -> {setup, camera, subject, replication, action}."""
    m = _NAME_RE.fullmatch(stem)
    if not m:
        raise SourceProblem("file name is not SsssCcccPpppRrrrAaaa")
    ids = dict(zip(("setup", "camera", "subject", "replication", "action"),
                   (int(g) for g in m.groups())))
    if not 1 <= ids["action"] <= 120:
        raise SourceProblem(f"action id {ids['action']} outside 1..120")
    return ids


def splits_of(ids: dict[str, int]) -> tuple[str, ...]:
    """Every split the sequence belongs to (xset too; only NTU120 stores declare it)."""
    return ("xsub_train" if ids["subject"] in XSUB_TRAIN_SUBJECTS else "xsub_val",
            "xview_train" if ids["camera"] in XVIEW_TRAIN_CAMERAS else "xview_val",
            "xset_train" if ids["setup"] % 2 == 0 else "xset_val")


def open_source(src: Path, *, layout: str | None = None) -> Source:
    files = list_files(src, "*.skeleton")
    entries, problems, ntu120 = [], [], False
    for path in files:
        try:
            ids = parse_name(path.stem)
        except SourceProblem as exc:
            problems.append(f"{path}: {exc}")
            continue
        ntu120 |= ids["action"] > 60 or ids["setup"] > 17
        entries.append(Entry(name=path.stem, where=str(path), splits=splits_of(ids),
                             payload=(path, ids["action"] - 1)))
    num_classes = 120 if ntu120 else 60
    split_names = ("xsub_train", "xsub_val", "xview_train", "xview_val")
    if ntu120:
        split_names += ("xset_train", "xset_val")
    return Source(layout=check_layout("ntu", "ntu25", layout), dims=3, entries=entries,
                  load=load_entry, classes=[f"A{a:03d}" for a in range(1, num_classes + 1)],
                  split_names=split_names, problems=problems)


def load_entry(entry: Entry) -> PoseRecord:
    path, label = entry.payload
    keypoints, scores = read_skeleton_file(path)
    return PoseRecord(name=entry.name, keypoints=keypoints, scores=scores, label=label,
                      img_shape=None, fps=FPS, source=Path(path).name)


def read_skeleton_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``.skeleton`` file -> (keypoints float32 [M, T, 25, 3], scores float32 [M, T, 25]),
    M <= 2 bodies chosen by energy (module docstring)."""
    with open(path, encoding="ascii", errors="strict") as f:
        frames = parse_skeleton_text(f.read())
    num_frames = len(frames)
    if num_frames == 0:
        raise SourceProblem("frame count is 0")

    # Group by bodyID, in order of first appearance.
    tracks: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for t, bodies in enumerate(frames):
        for body_id, xyz in bodies:
            times, coords = tracks.setdefault(body_id, ([], []))
            times.append(t)
            coords.append(xyz)

    track_list = list(tracks.values())
    energies = [_energy(coords) for _, coords in track_list]
    # sorted() is stable: equal energies keep the order of first appearance.
    ranked = sorted(range(len(track_list)), key=lambda i: -energies[i])
    kept = [track_list[i] for i in ranked[:MAX_BODIES]]
    keypoints = np.zeros((len(kept), num_frames, NUM_JOINTS, 3), np.float32)
    present = np.zeros((len(kept), num_frames), bool)
    for m, (times, coords) in enumerate(kept):
        keypoints[m, times] = np.stack(coords).astype(np.float32)
        present[m, times] = True
    scores = scores_from_zero_rule(keypoints) * present[..., None]
    return keypoints, scores.astype(np.float32)


def _energy(coords: list[np.ndarray]) -> float:
    """MS-G3D's body energy: sum over x, y, z of the std over (frames, joints)."""
    xyz = np.stack(coords)  # [T_present, 25, 3]
    return float(xyz.reshape(-1, 3).std(axis=0).sum())


def parse_skeleton_text(text: str) -> list[list[tuple[str, np.ndarray]]]:
    """The text of a ``.skeleton`` file -> per frame, a list of (bodyID, xyz float64 [25, 3])."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    pos = 0

    def next_line(what: str) -> str:
        nonlocal pos
        if pos >= len(lines):
            raise SourceProblem(f"truncated: file ends where line {pos + 1} should hold {what}")
        pos += 1
        return lines[pos - 1]

    def next_int(what: str) -> int:
        line = next_line(what)
        try:
            value = int(line)
        except ValueError:
            raise SourceProblem(f"line {pos}: expected {what}, got {line.strip()[:40]!r}") from None
        if value < 0:
            raise SourceProblem(f"line {pos}: negative {what} {value}")
        return value

    num_frames = next_int("the frame count")
    frames = []
    for t in range(num_frames):
        bodies = []
        seen_ids = set()
        for _ in range(next_int(f"the body count of frame {t + 1}")):
            info = next_line(f"a body record in frame {t + 1}").split()
            if len(info) != 10:
                raise SourceProblem(f"line {pos}: body record has {len(info)} values, expected 10")
            body_id = info[0]
            if body_id in seen_ids:
                raise SourceProblem(f"line {pos}: body {body_id} listed twice in frame {t + 1}")
            seen_ids.add(body_id)
            num_joints = next_int("the joint count")
            if num_joints != NUM_JOINTS:
                raise SourceProblem(f"line {pos}: {num_joints} joints, expected {NUM_JOINTS}")
            first = pos + 1
            rows = [next_line("a joint record").split() for _ in range(num_joints)]
            if any(len(r) != 12 for r in rows):
                bad = next(i for i, r in enumerate(rows) if len(r) != 12)
                raise SourceProblem(f"line {first + bad}: joint record has {len(rows[bad])} "
                                    f"values, expected 12")
            try:
                values = np.array([r[:3] for r in rows], dtype=np.float64)
            except ValueError as exc:
                raise SourceProblem(f"lines {first}-{pos}: bad joint coordinates ({exc})") from None
            bodies.append((body_id, values))
        frames.append(bodies)
    if pos != len(lines):
        raise SourceProblem(f"line {pos + 1}: unexpected data after {num_frames} frames")
    return frames
