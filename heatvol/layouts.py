"""Skeleton layouts: joint names, limbs for heatmaps, flip pairs, bones and graph edges.

One place defines every skeleton the toolkit knows. ``layout(name)`` returns a frozen
:class:`Layout`; everything else (the pose store, renderers, GCN graphs, importers) takes
its joint order from here.

Conventions (all indices 0-based):

- ``limbs``: joint index pairs rendered as limb heatmaps (the order is the channel order).
- ``flip_pairs``: (left, right) joint pairs swapped by a horizontal flip.
- ``bones``: one (child, parent) pair per joint for the bone modality; the root is its own
  parent, so ``bone[child] = joint[child] - joint[parent]`` is 0 there.
- ``edges``: undirected graph edges for GCNs (no self-loops).
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import check_mode

__all__ = ["Layout", "layout", "LAYOUTS", "BLAZEPOSE33_TO_COCO17"]


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    bones: tuple[tuple[int, int], ...]
    edges: tuple[tuple[int, int], ...]
    center: int  # the body-centre joint (3D centring, GCN inputs)
    # 3D view alignment (MS-G3D's pre-normalisation): the spine bone (bottom, top) is turned
    # onto +z, then the shoulder line (right, left) onto +x. None: the layout is not aligned.
    spine: tuple[int, int] | None = None
    shoulders: tuple[int, int] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    def channels(self, mode: str) -> int:
        """Channels of a ``mode`` volume: K joints for "joint", L limbs for "limb"."""
        return self.num_joints if check_mode(mode) == "joint" else self.num_limbs

    def channel_names(self, mode: str) -> list[str]:
        """One name per channel: the joint names, or "a-b" per limb."""
        if check_mode(mode) == "joint":
            return list(self.joints)
        return [f"{self.joints[a]}-{self.joints[b]}" for a, b in self.limbs]

    def flip_index(self) -> list[int]:
        """Permutation of joints under a horizontal flip: ``flipped[j] = joints[perm[j]]``."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def limb_flip_index(self) -> list[int]:
        """Permutation of limb channels under a horizontal flip (left limbs <-> right limbs).

        A limb with no mirror image (e.g. hip-hip) maps to itself.
        """
        perm = self.flip_index()
        lookup = {frozenset(limb): i for i, limb in enumerate(self.limbs)}
        out = []
        for i, (a, b) in enumerate(self.limbs):
            out.append(lookup.get(frozenset((perm[a], perm[b])), i))
        return out

    def __repr__(self) -> str:
        return (f"Layout({self.name!r}, joints={self.num_joints}, limbs={self.num_limbs}, "
                f"edges={len(self.edges)})")


def _one_based(pairs):
    return tuple((a - 1, b - 1) for a, b in pairs)


def _check(lay: Layout) -> Layout:
    k = lay.num_joints
    for group in ("limbs", "flip_pairs", "bones", "edges"):
        for a, b in getattr(lay, group):
            assert 0 <= a < k and 0 <= b < k, (lay.name, group, a, b)
    assert sorted(c for c, _ in lay.bones) == list(range(k)), (lay.name, "bones must cover every joint once")
    assert 0 <= lay.center < k
    assert (lay.spine is None) == (lay.shoulders is None)
    assert all(0 <= j < k for j in (lay.spine or ()) + (lay.shoulders or ()))
    return lay


COCO17 = _check(Layout(
    name="coco17",
    joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear",
            "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_hip", "right_hip",
            "left_knee", "right_knee", "left_ankle", "right_ankle"),
    # PoseC3D's default limb order (GeneratePoseTarget.skeletons).
    limbs=((0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10),
           (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12)),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # pyskl's COCO bone pairs: the hips' parent is the nose.
    bones=((0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 0), (6, 0), (7, 5), (8, 6), (9, 7),
           (10, 8), (11, 0), (12, 0), (13, 11), (14, 12), (15, 13), (16, 14)),
    # pyskl's COCO graph: shoulders to the nose, hips to their shoulders, no cross edges.
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8),
           (8, 6), (5, 0), (6, 0), (1, 0), (3, 1), (2, 0), (4, 2)),
    center=0,
))

OPENPOSE18 = _check(Layout(
    name="openpose18",
    joints=("nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
            "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
            "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
            "left_eye", "right_ear", "left_ear"),
    limbs=((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
           (1, 11), (11, 12), (12, 13), (0, 14), (14, 16), (0, 15), (15, 17)),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)),
    bones=((0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 2), (9, 8),
           (10, 9), (11, 5), (12, 11), (13, 12), (14, 0), (15, 0), (16, 14), (17, 15)),
    # MS-G3D graph/kinetics.py.
    edges=((4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5),
           (8, 2), (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14)),
    center=1,
))

_NTU_EDGES_1B = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
                 (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                 (18, 17), (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12))
NTU25 = _check(Layout(
    name="ntu25",
    joints=("spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow",
            "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist",
            "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip",
            "right_knee", "right_ankle", "right_foot", "spine_shoulder", "left_hand_tip",
            "left_thumb", "right_hand_tip", "right_thumb"),
    limbs=_one_based(_NTU_EDGES_1B),
    flip_pairs=_one_based(((5, 9), (6, 10), (7, 11), (8, 12), (13, 17), (14, 18), (15, 19),
                           (16, 20), (22, 24), (23, 25))),
    # MS-G3D / DualHead bone pairs; the spine shoulder (21) is the root.
    bones=_one_based(((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7),
                      (9, 21), (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14),
                      (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (21, 21),
                      (23, 8), (24, 25), (25, 12))),
    edges=_one_based(_NTU_EDGES_1B),
    center=1,  # spine mid, as MS-G3D's pre-normalisation
    spine=(0, 1),       # spine base -> spine mid (MS-G3D: zaxis=[0, 1])
    shoulders=(8, 4),   # right - left shoulder (MS-G3D: xaxis=[8, 4])
))

_KINECT_EDGES_1B = ((1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
                    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                    (18, 17), (19, 18), (20, 19))
KINECT20 = _check(Layout(
    name="kinect20",
    joints=("hip_center", "spine", "shoulder_center", "head", "left_shoulder", "left_elbow",
            "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist",
            "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip",
            "right_knee", "right_ankle", "right_foot"),
    limbs=_one_based(_KINECT_EDGES_1B),
    flip_pairs=_one_based(((5, 9), (6, 10), (7, 11), (8, 12), (13, 17), (14, 18), (15, 19),
                           (16, 20))),
    # CTR-GCN's NW-UCLA bone pairs; the shoulder centre (3) is the root.
    bones=_one_based(((1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3),
                      (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15),
                      (17, 1), (18, 17), (19, 18), (20, 19))),
    edges=_one_based(_KINECT_EDGES_1B),
    center=1,  # spine
    spine=(0, 1),       # hip centre -> spine, the same joints as NTU's
    shoulders=(8, 4),   # right - left shoulder
))

PENN13 = _check(Layout(
    name="penn13",
    joints=("head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
            "left_ankle", "right_ankle"),
    limbs=((0, 1), (0, 2), (1, 3), (3, 5), (2, 4), (4, 6), (1, 7), (7, 9), (9, 11),
           (2, 8), (8, 10), (10, 12), (7, 8)),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)),
    # The same tree as the graph: head -> shoulders -> arms, shoulders -> hips -> legs.
    bones=((0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 3), (6, 4), (7, 1), (8, 2), (9, 7),
           (10, 8), (11, 9), (12, 10)),
    # COCO-17's graph restricted to Penn's joints (head stands for the nose).
    edges=((1, 0), (2, 0), (3, 1), (5, 3), (4, 2), (6, 4), (7, 1), (8, 2), (9, 7), (11, 9),
           (10, 8), (12, 10)),
    center=0,
))

BLAZEPOSE33 = _check(Layout(
    name="blazepose33",
    joints=("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner",
            "right_eye", "right_eye_outer", "left_ear", "right_ear", "mouth_left",
            "mouth_right", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index",
            "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee",
            "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
            "left_foot_index", "right_foot_index"),
    # MediaPipe's POSE_CONNECTIONS.
    limbs=((0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
           (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16),
           (16, 18), (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25),
           (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31),
           (28, 32)),
    flip_pairs=((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
                (17, 18), (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32)),
    bones=((0, 0), (1, 0), (2, 1), (3, 2), (4, 0), (5, 4), (6, 5), (7, 3), (8, 6), (9, 0),
           (10, 0), (11, 0), (12, 0), (13, 11), (14, 12), (15, 13), (16, 14), (17, 15),
           (18, 16), (19, 15), (20, 16), (21, 15), (22, 16), (23, 11), (24, 12), (25, 23),
           (26, 24), (27, 25), (28, 26), (29, 27), (30, 28), (31, 27), (32, 28)),
    # A tree: the limbs without the cycles (eye row, mouth, hands' triangles, hip-hip, heel-toe).
    edges=((0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 0), (10, 0),
           (11, 0), (12, 0), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (12, 14),
           (14, 16), (16, 18), (16, 20), (16, 22), (11, 23), (12, 24), (23, 25), (24, 26),
           (25, 27), (26, 28), (27, 29), (28, 30), (27, 31), (28, 32)),
    center=0,
))

#: ``coco17_joints = blazepose33_joints[BLAZEPOSE33_TO_COCO17]``.
BLAZEPOSE33_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in
                              (COCO17, OPENPOSE18, NTU25, KINECT20, PENN13, BLAZEPOSE33)}


def layout(name: str | Layout) -> Layout:
    """The layout called ``name`` (``coco17``, ``openpose18``, ``ntu25``, ``kinect20``,
    ``penn13``, ``blazepose33``); a :class:`Layout` is returned as is."""
    if isinstance(name, Layout):
        return name
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton layout {name!r}; known: {', '.join(LAYOUTS)}") from None
