"""Skeleton graphs for the GCN models, built from a layout's edges.

Everything here is plain NumPy (float32 on the way out) and follows the official MS-G3D code
(kenziyuliu/MS-G3D, ``graph/tools.py`` and ``model/ms_gtcn.py``):

- :func:`adjacency`: the binary, symmetric adjacency ``A`` (``V x V``, no self-loops).
- :func:`hop_distance`: shortest-path hop counts by breadth-first search (``inf`` if unreachable).
- :func:`k_adjacency`: the disentangled k-hop adjacency
  ``Â_k = min((A+I)^k, 1) - min((A+I)^(k-1), 1) + I``, which equals ``1[d(i,j) = k] + I``.
  Powers are of ``A + I`` (not ``A``: on trees, walks of ``A^k`` miss nodes of the wrong parity).
- :func:`normalize_adjacency`: symmetric normalisation ``D^-1/2 Â D^-1/2``, D = row sums of ``Â``.
- :func:`multiscale_adjacency`: the stack ``[norm(Â_0); ...; norm(Â_{K-1})]`` of shape ``(K*V, V)``.
- :func:`spatial_temporal_graph`: the G3D graph over a window of ``τ`` frames,
  ``tile(A + I, (τ, τ))`` (``τV x τV``, node index ``w*V + v``): every node links to itself and
  to its spatial neighbours in every frame of the window.
- :func:`stgcn_spatial_partition`: ST-GCN's "spatial" partitioning (root / centripetal /
  centrifugal), ``(3, V, V)``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..layouts import Layout, layout as _layout

__all__ = ["adjacency", "hop_distance", "k_adjacency", "normalize_adjacency", "normalize_digraph",
           "multiscale_adjacency", "spatial_temporal_graph", "stgcn_spatial_partition"]


def adjacency(layout: str | Layout) -> np.ndarray:
    """Binary symmetric adjacency ``(V, V)`` float32 of a layout's ``edges`` (no self-loops)."""
    lay = _layout(layout)
    v = lay.num_joints
    a = np.zeros((v, v), dtype=np.float32)
    for i, j in lay.edges:
        if i != j:
            a[i, j] = a[j, i] = 1.0
    return a


def hop_distance(a: np.ndarray) -> np.ndarray:
    """All-pairs hop distance ``(V, V)`` float64 of a binary adjacency, by BFS; ``inf`` if unreachable."""
    v = len(a)
    nbrs = [np.flatnonzero(a[i]) for i in range(v)]
    dist = np.full((v, v), np.inf)
    for s in range(v):
        dist[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for w in nbrs[u]:
                if dist[s, w] == np.inf:
                    dist[s, w] = dist[s, u] + 1
                    queue.append(w)
    return dist


def _reach(a: np.ndarray, k: int) -> np.ndarray:
    """``min((A + I)^k, 1)``: clipping after every product gives the same 0/1 matrix as clipping
    the full power, without the entries of ``(A + I)^k`` growing large."""
    step = (a + np.eye(len(a))).astype(np.float64)
    r = np.eye(len(a))
    for _ in range(k):
        r = np.minimum(r @ step, 1.0)
    return r


def k_adjacency(a: np.ndarray, k: int, with_self: bool = True) -> np.ndarray:
    """Disentangled k-hop adjacency ``1[d(i,j) = k] (+ I)``, float32 ``(V, V)``, computed as
    MS-G3D does: ``min((A+I)^k, 1) - min((A+I)^(k-1), 1)``, plus ``I`` if ``with_self``.
    ``k = 0`` gives ``I``. ``a`` may already hold self-loops (the G3D graph does)."""
    eye = np.eye(len(a))
    if k == 0:
        return eye.astype(np.float32)
    ak = _reach(a, k) - _reach(a, k - 1)
    if with_self:
        ak = ak + eye
    return ak.astype(np.float32)


def normalize_adjacency(a: np.ndarray) -> np.ndarray:
    """Symmetric normalisation ``D^-1/2 A D^-1/2`` (D = row sums, self-loops included), float32."""
    deg = a.sum(-1)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg ** -0.5, 0.0)
    return (d[:, None] * a * d[None, :]).astype(np.float32)


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """Column normalisation ``A D^-1`` (D = column sums), as ST-GCN does; float32."""
    deg = a.sum(0)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, 1.0 / deg, 0.0)
    return (a * d[None, :]).astype(np.float32)


def multiscale_adjacency(a: np.ndarray, num_scales: int) -> np.ndarray:
    """``(K*V, V)`` float32 stack of ``normalize_adjacency(k_adjacency(a, k))`` for k = 0..K-1.

    Row ``k*V + v`` aggregates node ``v`` from its exactly-k-hop neighbours (and itself)."""
    return np.concatenate([normalize_adjacency(k_adjacency(a, k, with_self=True))
                           for k in range(num_scales)])


def spatial_temporal_graph(a: np.ndarray, window: int) -> np.ndarray:
    """G3D graph over a window of ``window`` frames: ``tile(A + I, (window, window))``, float32
    ``(window*V, window*V)``; node ``w*V + v`` is joint ``v`` in frame ``w`` of the window."""
    a_self = a + np.eye(len(a), dtype=a.dtype)
    return np.tile(a_self, (window, window)).astype(np.float32)


def stgcn_spatial_partition(a: np.ndarray, center: int) -> np.ndarray:
    """ST-GCN "spatial" partition strategy (max hop 1), ``(3, V, V)`` float32, as the official
    ST-GCN ``Graph(strategy='spatial')`` builds it.

    The 1-hop neighbourhood (self included) is column-normalised (``A D^-1``) and split in three:
    ``[self-loops, 1-hop pairs whose source j is at least as far from the centre as the target i,
    1-hop pairs whose source j is closer to the centre than i]``. ``A[k, j, i]`` weights node ``j``'s features
    into node ``i``: aggregation is ``einsum('nkctv,kvw->nctw', x, A)``.
    """
    v = len(a)
    hop = hop_distance(a)
    norm = normalize_digraph((hop <= 1).astype(np.float32))
    parts = np.zeros((3, v, v), np.float32)
    for i in range(v):
        for j in range(v):
            if hop[j, i] == 0:
                parts[0, j, i] = norm[j, i]
            elif hop[j, i] == 1:
                # Official naming: "root" (same distance) and "close" are summed into one partition.
                parts[1 if hop[j, center] >= hop[i, center] else 2, j, i] = norm[j, i]
    return parts
