"""Score-level ensembles of several streams (``heatvol ensemble``).

Each stream is one evaluated model: a GCN on joints, bones, joint motion or bone motion, or
PoseConv3D on joint or limb heatmaps. ``heatvol test ... --json > r.json`` (or ``--out r.json``)
saves a stream's class probabilities per test sequence; this module fuses several such files
by a weighted sum of the probabilities and scores the fusion::

    from heatvol.training import fuse_results, load_result
    files = ["j.json", "b.json", "jm.json", "bm.json"]
    fused = fuse_results([load_result(f) for f in files], [2, 2, 1, 1], sources=files)
    fused["top1"], [s["top1"] for s in fused["streams"]]

or on the command line::

    heatvol ensemble j.json b.json jm.json bm.json --weights 2 2 1 1

A result file is a JSON object with at least ``classes`` (list of str, index = label),
``names`` (list of str, one per sample), ``labels`` (list of int, the true label per sample)
and ``scores`` ([N, num_classes] list of lists of float: class probabilities, softmax
averaged over clips and flips); the metric keys and settings (``model``, ``mode``,
``modality``, ...) of ``heatvol test`` come with it. The fused result has the same four keys,
so it loads back with :func:`load_result` and can be fused again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..metrics import compute_metrics
from .config import ConfigError

__all__ = ["fuse_results", "load_result"]

REQUIRED = ("classes", "names", "labels", "scores")


def _origin() -> str:
    from .. import __version__

    return f"a result file must come from `heatvol test --json` (or --out) of heatvol {__version__}"


def _check(result, source: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Validate one result; return (classes, names, labels int64 [N], scores float64 [N, C])."""
    if not isinstance(result, dict):
        raise ConfigError(f"{source}: not a result object (a JSON {type(result).__name__}); "
                          f"{_origin()}")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ConfigError(f"{source}: no {', '.join(repr(k) for k in missing)} "
                          f"key{'s' if len(missing) > 1 else ''}; {_origin()}")
    classes, names = result["classes"], result["names"]
    checked_lists = []
    for key, value in (("classes", classes), ("names", names)):
        try:
            items = None if isinstance(value, (str, bytes, dict)) else list(value)
        except TypeError:
            items = None
        if items is None or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{source}: {key!r} must be a list of strings")
        checked_lists.append([str(v) for v in items])
    classes, names = checked_lists
    if not classes:
        raise ConfigError(f"{source}: 'classes' is empty")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{source}: sample name {name!r} appears more than once")
        seen.add(name)
    n, c = len(names), len(classes)
    labels = result["labels"]
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or len(labels) != n or (n and labels.dtype.kind not in "iu"):
        raise ConfigError(f"{source}: 'labels' must be {n} integer(s), one per name")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= c):
        bad = int(labels[(labels < 0) | (labels >= c)][0])
        raise ConfigError(f"{source}: label {bad} is outside the {c} classes")
    try:
        scores = np.asarray(result["scores"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: 'scores' is not an [N, num_classes] array of numbers "
                          f"(ragged rows or non-numbers)") from None
    if scores.size == 0 and n == 0:
        scores = scores.reshape(0, c)
    if scores.shape != (n, c):
        raise ConfigError(f"{source}: scores have shape {list(scores.shape)}, expected "
                          f"[{n}, {c}] ({n} sample(s) x {c} classes)")
    if not np.isfinite(scores).all():
        raise ConfigError(f"{source}: 'scores' holds NaN or infinite values")
    return classes, names, labels, scores


def load_result(path: str | os.PathLike) -> dict:
    """Read one result JSON written by ``heatvol test --json`` / ``--out`` (or by
    ``heatvol ensemble --out``) and check it: ``classes`` list[str] (C), ``names`` list[str]
    (N, unique), ``labels`` list[int] (N, in [0, C)), ``scores`` list of N lists of C floats.
    Returns the JSON object as a dict (lists, as stored). Every problem is a one-line
    :class:`heatvol.training.ConfigError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a result file")
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}); {_origin()}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not JSON (not UTF-8 text); {_origin()}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    _check(result, str(path))
    return result


def _weights(weights, count: int) -> np.ndarray:
    if weights is None:
        return np.ones(count, np.float64)
    w = list(weights)
    if len(w) != count:
        raise ConfigError(f"--weights: {len(w)} weight(s) for {count} result file(s); give one "
                          f"per file, in the same order")
    try:
        w = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"--weights: {weights!r} are not numbers") from None
    if not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"--weights: weights must be finite and non-negative, got "
                          f"{' '.join(f'{x:g}' for x in w)}")
    if w.sum() <= 0:
        raise ConfigError("--weights: the weights sum to 0; give at least one positive weight")
    return w


def _align(checked: list[tuple], sources: list[str]) -> list[np.ndarray]:
    """The scores of every checked result (``_check``'s tuples), rows in the order of the
    first result's names; a result with other classes, samples or labels is a ConfigError."""
    classes, names, labels, first = checked[0]
    ref = sources[0]
    index = {name: i for i, name in enumerate(names)}
    aligned = [first]
    for (cls, nms, lbl, sc), src in zip(checked[1:], sources[1:]):
        if cls != classes:
            if len(cls) != len(classes):
                detail = f"{len(cls)} classes, {ref} has {len(classes)}"
            else:
                i = next(i for i, (a, b) in enumerate(zip(cls, classes)) if a != b)
                detail = f"class {i} is {cls[i]!r}, in {ref} {classes[i]!r}"
            raise ConfigError(f"{src}: classes differ from {ref}'s ({detail}); fuse only "
                              f"streams evaluated on the same dataset")
        extra = [n for n in nms if n not in index]
        if extra:
            raise ConfigError(f"{src}: {len(extra)} sample(s) not in {ref} (first: "
                              f"{extra[0]!r}); evaluate every stream on the same split")
        if len(nms) != len(names):
            here = set(nms)
            missing = [n for n in names if n not in here]
            raise ConfigError(f"{src}: {len(missing)} sample(s) of {ref} missing (first: "
                              f"{missing[0]!r}); evaluate every stream on the same split")
        order = np.asarray([index[n] for n in nms], dtype=np.int64)
        sc_aligned = np.empty_like(sc)
        sc_aligned[order] = sc
        lbl_aligned = np.empty_like(lbl)
        lbl_aligned[order] = lbl
        differ = np.flatnonzero(lbl_aligned != labels)
        if differ.size:
            j = int(differ[0])
            raise ConfigError(f"{src}: {differ.size} sample(s) with another label than in "
                              f"{ref} (first: {names[j]!r} is {int(lbl_aligned[j])} "
                              f"{classes[lbl_aligned[j]]!r}, in {ref} {int(labels[j])} "
                              f"{classes[labels[j]]!r})")
        aligned.append(sc_aligned)
    return aligned


def fuse_results(results: list[dict], weights: list[float] | None = None, *,
                 sources: list[str] | None = None) -> dict:
    """Fuse the saved test scores of several streams; return the fused metrics.

    ``results``: dicts as :func:`load_result` returns (``scores`` may also be a float array
    [N, C], ``labels`` an int array [N]). ``weights``: one non-negative float per result,
    positive sum [default: all 1]. ``sources``: a name per result for messages [default:
    ``results[i]``].

    All results must have the same ``classes`` (same order) and the same set of sample
    ``names``; samples are aligned by name (the order may differ between files) and the
    label of a name must agree in every file. The output follows the first result's sample
    order. Fused scores = sum_i w_i * scores_i, float64 [N, C]: the weighted sum of the
    saved *probabilities*, as pyskl fuses its 2:2:1:1 joint / bone / joint-motion /
    bone-motion ensembles. (The official MS-G3D and DualHead-Net ensemble scripts add the
    raw logits instead; the result files keep probabilities, so that is what we fuse.) The
    rows sum to sum(weights), not 1; only the ranking matters to the metrics, which are
    therefore unchanged when all weights are scaled by the same positive factor.

    Returns :func:`heatvol.metrics.compute_metrics`' dict (``num_samples top1 top5
    mean_class per_class confusion``) of the fused scores, plus ``streams`` (one dict per
    result: ``source weight top1 model mode modality``, top1 recomputed over the aligned
    samples; a setting the file lacks is None), ``weights`` (list of float), ``names``
    (list[str], N), ``labels`` (list[int], N), ``scores`` (fused, N lists of C floats) and
    ``classes``. Every violation is a one-line :class:`heatvol.training.ConfigError` naming
    the offending source.
    """
    results = list(results)
    if not results:
        raise ConfigError("no results to fuse; give one or more result files")
    if sources is None:
        sources = [f"results[{i}]" for i in range(len(results))]
    sources = [str(s) for s in sources]
    if len(sources) != len(results):
        raise ConfigError(f"{len(sources)} source name(s) for {len(results)} result(s)")
    w = _weights(weights, len(results))
    checked = [_check(r, s) for r, s in zip(results, sources)]

    classes, names, labels, first = checked[0]
    aligned = _align(checked, sources)

    fused = np.zeros_like(first)
    for weight, sc in zip(w, aligned):
        fused += weight * sc
    res = compute_metrics(fused, labels, classes)
    streams = []
    for r, src, weight, sc in zip(results, sources, w, aligned):
        model = r.get("model")
        if model is None and "streams" in r:
            model = "ensemble"
        streams.append({"source": src, "weight": float(weight),
                        "top1": compute_metrics(sc, labels, classes)["top1"],
                        "model": model, "mode": r.get("mode"), "modality": r.get("modality")})
    res.update({"streams": streams, "weights": [float(x) for x in w], "names": list(names),
                "labels": [int(x) for x in labels], "scores": fused.tolist(),
                "classes": list(classes)})
    return res
