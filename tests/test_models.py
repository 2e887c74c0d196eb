"""Models: parameter counts against the references, forward/backward on every layout, graphs.

Reference counts: ../shared/docs/reference-gcn.md (measured on the official MS-G3D and
DualHead-Net code) and reference-posec3d.md (analytic PoseConv3D counts for 17 input channels).
"""

import numpy as np
import pytest
import torch

from heatvol.layouts import layout
from heatvol.models import CNN_MODELS, GCN_MODELS, build, count_parameters
from heatvol.models import graph as G

LAYOUTS = ["coco17", "openpose18", "ntu25", "kinect20", "penn13"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny convolutions on a shared 2-core box run faster and steadier on one thread.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _a_res_count(model):
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("A_res"))


# --------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("name, lay, kw, expected", [
    # reference-gcn.md §1.7 (official MS-G3D; pyskl's MSG3D + GCNHead gives the same totals)
    ("msg3d", "ntu25", dict(num_classes=60), 3_194_595),
    ("msg3d", "ntu25", dict(num_classes=120), 3_217_695),
    ("msg3d", "coco17", dict(num_classes=60), 2_975_763),
    ("msg3d", "openpose18", dict(num_classes=400), 3_129_460),
    ("msg3d", "openpose18", dict(num_classes=400, num_gcn_scales=8, num_g3d_scales=8), 3_144_328),
    # reference-gcn.md §2.4 (official DualHead-Net, 9 GCN / 6 G3D scales)
    ("dualhead", "ntu25", dict(num_classes=60), 3_015_253),
    ("dualhead", "ntu25", dict(num_classes=120), 3_049_933),
    ("dualhead", "coco17", dict(num_classes=60), 2_753_509),
    ("dualhead", "openpose18", dict(num_classes=400), 2_976_816),
    ("dualhead", "ntu25", dict(num_classes=60, num_gcn_scales=13), 3_259_305),
])
def test_gcn_parameter_counts_exact(name, lay, kw, expected):
    assert count_parameters(build(name, layout=lay, **kw)) == expected


def test_a_res_share_and_state_dict_layout():
    m = build("msg3d", layout="ntu25", num_classes=60)
    assert _a_res_count(m) == 406_875                       # reference-gcn.md §1.7
    assert _a_res_count(build("dualhead", layout="ntu25", num_classes=60)) == 478_125
    sd = m.state_dict()
    assert len(sd) == 810                                   # as the official state_dict
    assert sd["gcn3d1.gcn3d.0.gcn3d.1.A_res"].shape == (450, 75)
    assert sd["sgcn1.0.A_res"].shape == (325, 25)
    assert sd["gcn3d1.gcn3d.0.out_conv.weight"].shape == (96, 96, 1, 3, 1)
    # Fixed adjacency stacks are buffers that follow .to() but stay out of the state_dict.
    buffers = dict(m.named_buffers())
    assert "sgcn1.0.A_powers" in buffers and "gcn3d1.gcn3d.0.gcn3d.1.A_scales" in buffers
    assert not any(k.endswith(("A_powers", "A_scales")) for k in sd)
    for name, p in m.named_parameters():
        if name.endswith("A_res"):
            assert p.abs().max() <= 1e-6 and p.abs().max() > 0
    # Module breakdown, reference-gcn.md §1.7.
    breakdown = {"data_bn": 300, "gcn3d1": 205_836, "sgcn1": 37_757, "tcn1": 12_800,
                 "gcn3d2": 387_276, "sgcn2": 229_149, "tcn2": 50_176, "gcn3d3": 1_163_148,
                 "sgcn3": 886_397, "tcn3": 198_656, "fc": 23_100}
    assert {k: count_parameters(getattr(m, k)) for k in breakdown} == breakdown


def test_dualhead_attention_sizes():
    m = build("dualhead", layout="ntu25", num_classes=60)
    sizes = [count_parameters(getattr(m, k)) for k in (
        "conv_ta_fine_to_coarse_block_2_to_1", "conv_ta_fine_to_coarse_block_3_to_2",
        "conv_sa_coarse_to_fine_block_2_to_2", "conv_sa_coarse_to_fine_block_3_to_3")]
    assert sizes == [865, 1_729, 4_801, 9_601]              # reference-gcn.md §2.4
    assert m.conv_ta_fine_to_coarse_block_2_to_1.weight.abs().sum() == 0
    for lay, k in (("coco17", 17), ("openpose18", 17), ("penn13", 13)):
        sa = build("dualhead", layout=lay, num_classes=5).conv_sa_coarse_to_fine_block_2_to_2
        assert sa.kernel_size == (k,)


@pytest.mark.parametrize("name, reference, exact", [
    # reference-posec3d.md analytic counts (17 input channels); they include the I3D head with
    # 60 classes (NTU60 configs): the backbones alone are 1,994,080 / 3,389,472 / 241,488.
    ("slowonly", 2.025e6, 2_024_860),
    ("c3d", 3.41e6, 3_404_892),
    ("x3d", 0.255e6, 254_508),
])
def test_posec3d_parameter_counts(name, reference, exact):
    m = build(name, layout="coco17", num_classes=60)
    n = count_parameters(m)
    assert abs(n - reference) / reference < 0.02
    assert n == exact
    assert m.backbone.out_channels == {"slowonly": 512, "c3d": 256, "x3d": 216}[name]


def test_stgcn_parameter_count():
    # Not in the references; the official ST-GCN on NTU (60 classes) is quoted as ~3.1M.
    assert count_parameters(build("stgcn", layout="ntu25", num_classes=60)) == 3_098_832


# --------------------------------------------------------------------------- forward / backward

@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("name", list(CNN_MODELS))
def test_cnn_forward_backward(name, lay):
    torch.manual_seed(0)
    k = layout(lay).num_joints
    m = build(name, layout=lay, num_classes=7)
    first_conv = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Conv3d))
    assert first_conv.in_channels == k
    x = torch.rand(2, k, 8, 16, 16)
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_cnn_limb_channels():
    lay = layout("coco17")
    m = build("c3d", layout=lay, num_classes=3, in_channels=lay.num_limbs)
    assert m.backbone.conv1a.conv.in_channels == lay.num_limbs
    assert build("slowonly", layout="penn13", num_classes=3).backbone.conv1.conv.in_channels == 13


@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("name", list(GCN_MODELS))
def test_gcn_forward_backward(name, lay):
    torch.manual_seed(0)
    v = layout(lay).num_joints
    m = build(name, layout=lay, num_classes=7)
    x = torch.randn(2, 2, 16, v, 3)                 # [N, M, T, V, C]
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing


def test_gcn_feature_shapes_and_single_person():
    m = build("msg3d", layout="penn13", num_classes=4, num_person=1).eval()
    x = torch.randn(3, 1, 15, 13, 3)
    with torch.no_grad():
        assert m.forward_features(x).shape == (3, 384, 4, 13)   # 15 -> 15 -> 8 -> 4
        assert m(x).shape == (3, 4)
    s = build("stgcn", layout="penn13", num_classes=4).eval()
    with torch.no_grad():
        assert s.forward_features(x).shape == (3, 256, 4, 13)


def test_gcn_rejects_wrong_person_count():
    m = build("msg3d", layout="penn13", num_classes=4)          # num_person=2
    with pytest.raises(ValueError, match="M\\*V\\*C"):
        m(torch.randn(2, 1, 8, 13, 3))


def test_dualhead_heads():
    torch.manual_seed(0)
    m = build("dualhead", layout="kinect20", num_classes=5).eval()
    assert m.multi_head
    x = torch.randn(2, 2, 16, 20, 3)
    with torch.no_grad():
        fine, coarse = m(x, return_heads=True)
        avg = m(x)
    assert fine.shape == coarse.shape == (2, 5)
    torch.testing.assert_close(avg, (fine + coarse) / 2)


# --------------------------------------------------------------------------- graphs

@pytest.mark.parametrize("lay", LAYOUTS)
def test_adjacency_and_k_hop(lay):
    L = layout(lay)
    a = G.adjacency(L)
    assert a.shape == (L.num_joints,) * 2
    assert (a == a.T).all() and (np.diag(a) == 0).all() and set(np.unique(a)) <= {0.0, 1.0}
    assert a.sum() == 2 * len(L.edges)
    d = G.hop_distance(a)
    assert np.isfinite(d).all()                      # every layout graph is connected
    eye = np.eye(len(a))
    for k in range(int(d.max()) + 3):
        expected = (d == k).astype(np.float32) + (eye if k else 0)
        np.testing.assert_array_equal(G.k_adjacency(a, k), expected)
    # Symmetric normalisation of each scale.
    stack = G.multiscale_adjacency(a, 13)
    assert stack.shape == (13 * len(a), len(a))
    for k in range(13):
        ak = G.k_adjacency(a, k)
        nk = stack[k * len(a):(k + 1) * len(a)]
        np.testing.assert_allclose(nk, nk.T, atol=1e-7)
        dinv = np.diag(ak.sum(1) ** -0.5)
        np.testing.assert_allclose(nk, dinv @ ak @ dinv, atol=1e-6)


def test_known_diameters_and_powers_of_a_plus_i():
    assert G.hop_distance(G.adjacency("ntu25")).max() == 12
    assert G.hop_distance(G.adjacency("coco17")).max() == 8
    assert G.hop_distance(G.adjacency("openpose18")).max() == 8
    # Powers of A (instead of A + I) would miss the nodes of the wrong parity on a tree.
    a = G.adjacency("ntu25")
    a2 = np.minimum(np.linalg.matrix_power(a, 2), 1) - np.minimum(a, 1) + np.eye(25)
    assert not np.array_equal(a2, G.k_adjacency(a, 2))


@pytest.mark.parametrize("window", [3, 5])
def test_spatial_temporal_graph(window):
    a = G.adjacency("coco17")
    v = len(a)
    big = G.spatial_temporal_graph(a, window)
    assert big.shape == (window * v,) * 2
    np.testing.assert_array_equal(big, np.tile(a + np.eye(v), (window, window)))
    # Joint v in frame w links to itself and to v's neighbours in every frame of the window.
    assert big[0 * v + 5, (window - 1) * v + 5] == 1 and big[0 * v + 5, 1 * v + 7] == 1
    # k-hop on the window graph (self-loops already in A) is still 1[d = k] + I.
    d = G.hop_distance(big - np.diag(np.diag(big)))
    for k in range(6):
        np.testing.assert_array_equal(G.k_adjacency(big, k),
                                      (d == k).astype(np.float32) + (np.eye(len(big)) if k else 0))


def test_stgcn_partition():
    a = G.adjacency("openpose18")
    parts = G.stgcn_spatial_partition(a, center=1)
    assert parts.shape == (3, 18, 18)
    # The partitions tile the column-normalised 1-hop neighbourhood; each column sums to 1.
    np.testing.assert_allclose(parts.sum(0).sum(0), np.ones(18), atol=1e-6)
    assert (parts[0] > 0).sum() == 18
    assert np.count_nonzero(parts.sum(0)) == 18 + 2 * len(layout("openpose18").edges)
