"""benchmarks/store_scale.py at a tiny size (so it cannot rot), and the dataset behaviour it
measures: building a dataset reads no sequence, and DataLoader workers open the store
themselves and give the same samples as the main process."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import heatvol
from heatvol.data import PoseDataset, ResumableSampler, SkeletonDataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "store_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("store_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k400_like_sequences_have_pyskl_shapes(bench):
    rng = np.random.default_rng(0)
    seqs = [bench.k400_like(rng, i) for i in range(200)]
    for a in seqs:
        m, t = a["keypoint"].shape[:2]
        assert a["keypoint"].shape == (m, t, 17, 2) and a["keypoint"].dtype == np.float32
        assert a["keypoint_score"].shape == (m, t, 17) and a["keypoint_score"].dtype == np.float32
        assert 1 <= m <= 5 and 1 <= t <= 300 and a["total_frames"] == t
        assert 0 <= a["label"] < 400 and a["img_shape"] == a["original_shape"]
        assert ((a["keypoint_score"] >= 0) & (a["keypoint_score"] <= 1)).all()
    frames = np.array([a["total_frames"] for a in seqs])
    persons = np.array([a["keypoint"].shape[0] for a in seqs])
    assert 240 < frames.mean() < 295 and 1.8 < persons.mean() < 2.5  # K400: ~268 frames
    again = bench.k400_like(np.random.default_rng(0), 0)
    np.testing.assert_array_equal(again["keypoint"], seqs[0]["keypoint"])  # seeded


def test_store_scale_runs_and_prints_one_table(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--sequences", "14", "--dir", str(tmp_path), "--reads", "5",
                       "--batch-size", "4", "--json", str(out), "--clean"]) == 0
    text = capsys.readouterr().out
    rows = {}
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    assert rows["measure"] == ["store, 14", "pickle, 14"]
    for measure in ["write", "file size (MiB)", "open / pickle.load",
                    "read 1 sequence, cold cache: p50 / p99 (ms)",
                    "epoch, 0 workers (sequences/s)", "epoch, 2 workers (sequences/s)",
                    "main process, 2 workers: RSS / PSS / USS",
                    "each of 2 workers (largest): RSS / PSS / USS"]:
        assert len(rows[measure]) == 2 and "-" not in rows[measure], (measure, text)
    results = json.loads(out.read_text())
    for n, res in zip((14,), results, strict=True):
        assert res["build"]["sequences"] == n
        for r in res["store_epochs"] + res["pickle_epochs"]:
            assert r["sequences"] == round(n * 240 / 260) and r["sequences_per_s"] > 0
            assert len(r["workers_mem"]) == r["workers"]
            assert all(w["rss"] > 0 for w in r["workers_mem"])
        assert res["reads"]["cold"]["p50_ms"] > 0 and res["build"]["store_mb"] > 0
    assert not list(tmp_path.glob("n*-seed0"))  # --clean
    # several sizes: a store and a pickle column per size, in the order given
    bigger = json.loads(json.dumps(results[0]))
    bigger["build"]["sequences"] = 140
    two = bench.table([results[0], bigger]).splitlines()
    assert two[2] == "| measure | store, 14 | pickle, 14 | store, 140 | pickle, 140 |"
    assert all(line.count("|") == 6 for line in two[2:])


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "poses.h5"
    rng = np.random.default_rng(3)
    names = []
    with heatvol.PoseWriter(path, layout="coco17", classes=["a", "b", "c"], mode="w",
                            commit_every=4) as w:
        for i in range(13):
            m, t = int(rng.integers(0, 4)), int(rng.integers(1, 30))
            sc = rng.uniform(0, 1, (m, t, 17))
            sc[sc < 0.2] = 0
            name = f"séq{i}"  # non-ASCII names survive the name buffer
            w.append(name, rng.uniform(0, 200, (m, t, 17, 2)), sc, label=i % 3,
                     img_shape=(240, 320))
            names.append(name)
        w.set_splits({"train": names[:9], "test": names[9:]})
    return path


def _batches(ds, workers, context=None):
    sampler = ResumableSampler(len(ds), seed=5)
    sampler.set_epoch(1)
    loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers,
                        multiprocessing_context=context if workers else None)
    return [b for b in loader]


def test_building_a_dataset_reads_no_sequence(small_store, monkeypatch):
    store = heatvol.PoseStore(small_store)
    names = store.split("train")
    expected = np.array([store[n].label for n in names], np.int64)

    def refuse(self, key):
        raise AssertionError(f"read {key!r} while building the dataset")

    monkeypatch.setattr(heatvol.PoseStore, "__getitem__", refuse)
    pose = PoseDataset(store, names, train=True, clip_len=8, size=16, render_device="cuda")
    skel = SkeletonDataset(store, names, train=True, clip_len=8)
    for ds in (pose, skel):
        np.testing.assert_array_equal(ds.labels, expected)
        assert ds.names == names and len(ds) == len(names)
    with pytest.raises(KeyError, match="no sequence named 'nope'"):
        PoseDataset(store, names + ["nope"], train=True, clip_len=8, size=16)


class _WhichStore(PoseDataset):
    """Items say whether they were read through the store object the dataset was built with."""

    def __getitem__(self, item):
        out = super().__getitem__(item)
        out["parent_store"] = getattr(self.store, "built_here", False)
        out["pid"] = os.getpid()
        return out


@pytest.mark.parametrize("context", [None, "spawn"])
def test_workers_open_the_store_themselves_and_give_the_same_samples(small_store, context):
    store = heatvol.PoseStore(small_store, in_memory=True)
    store.built_here = True
    ds = _WhichStore(store, store.split("train"), train=True, clip_len=8, size=16,
                     render_device="cuda", seed=5)
    main = _batches(ds, 0)
    workers = _batches(ds, 2, context)
    assert all(b["parent_store"].all() for b in main)
    assert not any(b["parent_store"].any() for b in workers)  # each worker opened its own
    assert {int(p) for b in workers for p in b["pid"]}.isdisjoint({os.getpid()})
    for a, b in zip(main, workers, strict=True):
        for key in ("keypoints", "scores", "label", "index"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert ds.store is store  # the main process keeps the store it was given


def test_skeleton_dataset_workers_give_the_same_samples(small_store):
    store = heatvol.PoseStore(small_store)
    ds = SkeletonDataset(store, store.split("test"), train=False, clip_len=8, num_clips=2,
                         flip=True)
    for a, b in zip(_batches(ds, 0), _batches(ds, 2), strict=True):
        torch.testing.assert_close(a["skeleton"], b["skeleton"], rtol=0, atol=0)
        torch.testing.assert_close(a["label"], b["label"], rtol=0, atol=0)
