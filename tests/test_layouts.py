from collections import deque

import pytest

import heatvol
from heatvol.layouts import BLAZEPOSE33_TO_COCO17, LAYOUTS


def _connected(n, edges):
    adj = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, todo = {0}, deque([0])
    while todo:
        for nb in adj[todo.popleft()] - seen:
            seen.add(nb)
            todo.append(nb)
    return len(seen) == n


@pytest.mark.parametrize("name", ["coco17", "openpose18", "ntu25", "kinect20", "penn13", "blazepose33"])
def test_layout_is_consistent(name):
    lay = heatvol.layout(name)
    assert lay.name == name
    k = lay.num_joints
    assert len(set(lay.joints)) == k
    assert _connected(k, lay.edges), "graph must connect every joint"
    assert len({frozenset(e) for e in lay.edges}) == len(lay.edges), "duplicate edges"
    assert all(a != b for a, b in lay.edges)
    # bones form a tree: following parents from any joint reaches the single root
    parent = dict(lay.bones)
    roots = [c for c, p in lay.bones if c == p]
    assert len(roots) == 1
    for j in range(k):
        seen = set()
        while parent[j] != j:
            assert j not in seen
            seen.add(j)
            j = parent[j]
    # flip pairs are left/right by name and the permutation is an involution
    for a, b in lay.flip_pairs:
        na, nb = lay.joints[a], lay.joints[b]
        assert na.replace("left", "right") == nb or na.replace("right", "left") == nb, (na, nb)
    perm = lay.flip_index()
    assert [perm[p] for p in perm] == list(range(k))
    lperm = lay.limb_flip_index()
    assert [lperm[p] for p in lperm] == list(range(lay.num_limbs))


def test_coco17_matches_posec3d():
    lay = heatvol.layout("coco17")
    assert lay.limbs == ((0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8),
                         (8, 10), (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12))
    assert [a for a, _ in lay.flip_pairs] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert len(lay.edges) == 16
    # left arm limbs <-> right arm limbs; hip-hip maps to itself
    lperm = lay.limb_flip_index()
    assert lperm[lay.limbs.index((5, 7))] == lay.limbs.index((6, 8))
    assert lperm[lay.limbs.index((11, 12))] == lay.limbs.index((11, 12))


def test_ntu25_graph_from_reference():
    lay = heatvol.layout("ntu25")
    assert len(lay.edges) == 24
    assert (22, 7) in lay.edges and (21, 22) in lay.edges  # 23-8 and 22-23, 1-based
    assert (20, 20) in lay.bones


def test_blazepose_to_coco_names():
    blaze, coco = heatvol.layout("blazepose33"), heatvol.layout("coco17")
    for ci, bi in enumerate(BLAZEPOSE33_TO_COCO17):
        assert blaze.joints[bi] == coco.joints[ci]


def test_unknown_layout_message():
    with pytest.raises(ValueError, match="unknown skeleton layout 'coco18'.*coco17"):
        heatvol.layout("coco18")
    assert set(LAYOUTS) == {"coco17", "openpose18", "ntu25", "kinect20", "penn13", "blazepose33"}


@pytest.mark.parametrize("name, bottom, top", [("ntu25", "spine_base", "spine_mid"),
                                               ("kinect20", "hip_center", "spine")])
def test_view_alignment_joints(name, bottom, top):
    lay = heatvol.layout(name)
    assert [lay.joints[j] for j in lay.spine] == [bottom, top]
    assert [lay.joints[j] for j in lay.shoulders] == ["right_shoulder", "left_shoulder"]
