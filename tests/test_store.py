import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatvol import PoseStore, PoseWriter
from heatvol.store import StoreError


def make_sequence(name: str, m: int, t: int, k: int = 17, c: int = 2):
    """Deterministic arrays from the name, so a reader can re-derive what was written."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    kp = (rng.random((m, t, k, c)) * 500).astype(np.float32)
    sc = rng.random((m, t, k)).astype(np.float32)
    sc[sc < 0.1] = 0.0
    return kp, sc


def test_round_trip_and_metadata(tmp_path):
    path = tmp_path / "p.h5"
    seqs = {f"v{i:03d}": (i % 3, 1 + i) for i in range(20)}
    with PoseWriter(path, layout="coco17", classes=["a", "b", "c"], commit_every=7) as w:
        for name, (m, t) in seqs.items():
            kp, sc = make_sequence(name, m, t)
            w.append(name, kp, sc, label=t % 3, img_shape=(480, 640), fps=25.0, source=f"/x/{name}.mp4")
        w.set_splits({"train": list(seqs)[:12], "test": list(seqs)[12:]})
        w.add_failure("broken", "cannot decode")
    assert not (tmp_path / "p.h5.parts").exists(), "close() merges the parts"
    with PoseStore(path) as store:
        assert len(store) == 20 and store.names() == list(seqs)
        assert store.layout.name == "coco17" and store.dims == 2
        assert store.classes == ["a", "b", "c"]
        assert store.split("test") == list(seqs)[12:]
        assert store.failures == {"broken": "cannot decode"}
        for name, (m, t) in seqs.items():
            rec = store[name]
            kp, sc = make_sequence(name, m, t)
            assert rec.keypoints.dtype == np.float32 and rec.keypoints.shape == (m, t, 17, 2)
            np.testing.assert_array_equal(rec.keypoints, kp)
            np.testing.assert_array_equal(rec.scores, sc)
            assert rec.label == t % 3 and rec.img_shape == (480, 640) and rec.fps == 25.0
            assert rec.source == f"/x/{name}.mp4"
        assert store.check() == []
        with pytest.raises(KeyError, match="no split named 'val'.*train, test"):
            store.split("val")
        with pytest.raises(KeyError, match="no sequence named"):
            store["nope"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 9)), min_size=1, max_size=12),
       st.integers(1, 5), st.booleans())
def test_ragged_round_trip_property(tmp_path_factory, shapes, commit_every, three_d):
    path = tmp_path_factory.mktemp("prop") / "s.h5"
    c = 3 if three_d else 2
    with PoseWriter(path, layout="kinect20" if three_d else "penn13", dims=c,
                    commit_every=commit_every, compact_on_close=False) as w:
        for i, (m, t) in enumerate(shapes):
            kp, sc = make_sequence(f"s{i}", m, t, k=w.layout.num_joints, c=c)
            w.append(f"s{i}", kp, None if three_d else sc, img_shape=None if three_d else (9, 9))
    # before compaction (parts only) and after it, the store reads back the same
    for compact in (False, True):
        if compact:
            PoseWriter(path).close()
        store = PoseStore(path, in_memory=compact)
        assert len(store) == len(shapes)
        for i, (m, t) in enumerate(shapes):
            kp, sc = make_sequence(f"s{i}", m, t, k=store.layout.num_joints, c=c)
            rec = store[f"s{i}"]
            np.testing.assert_array_equal(rec.keypoints, kp)
            np.testing.assert_array_equal(rec.scores, np.ones_like(sc) if three_d else sc)
        assert store.check() == []


def test_replace_and_resume(tmp_path):
    path = tmp_path / "p.h5"
    with PoseWriter(path, layout="coco17") as w:
        for i in range(5):
            w.append(f"s{i}", *make_sequence(f"s{i}", 1, 4), img_shape=(10, 10))
    with PoseWriter(path) as w:
        assert "s3" in w and len(w.names()) == 5
        w.append("s3", np.zeros((2, 3, 17, 2)), np.ones((2, 3, 17)), img_shape=(10, 10))
        w.append("s9", *make_sequence("s9", 1, 2), img_shape=(10, 10))
    store = PoseStore(path)
    assert len(store) == 6 and store["s3"].keypoints.shape == (2, 3, 17, 2)
    np.testing.assert_array_equal(store["s4"].keypoints, make_sequence("s4", 1, 4)[0])
    assert store.check() == []


def test_missing_coordinates_become_missing_joints(tmp_path):
    kp = np.ones((1, 2, 17, 2), np.float32)
    kp[0, 1, 3] = np.nan
    kp[0, 0, 4, 0] = np.inf
    with PoseWriter(tmp_path / "p.h5", layout="coco17") as w:
        w.append("a", kp, np.full((1, 2, 17), 0.5), img_shape=(10, 10))
    rec = PoseStore(tmp_path / "p.h5")["a"]
    assert np.isfinite(rec.keypoints).all()
    assert rec.scores[0, 1, 3] == 0 and rec.scores[0, 0, 4] == 0 and rec.scores[0, 0, 5] == 0.5


@pytest.mark.parametrize("bad, message", [
    (dict(keypoints=np.zeros((1, 2, 13, 2))), r"keypoints must be \[M, T, 17, 2 or 3\]"),
    (dict(scores=np.full((1, 2, 17), 1.5)), r"scores must be finite and in \[0, 1\]"),
    (dict(scores=np.ones((1, 3, 17))), r"scores must be \[1, 2, 17\]"),
    (dict(img_shape=None), r"need img_shape"),
    (dict(label=7), r"label 7 outside \[-1, 2\)"),
    (dict(keypoints=np.zeros((1, 0, 17, 2)), scores=np.zeros((1, 0, 17))), "no frames"),
])
def test_append_rejects_bad_input(tmp_path, bad, message):
    args = dict(keypoints=np.zeros((1, 2, 17, 2)), scores=np.ones((1, 2, 17)), img_shape=(5, 5), label=0)
    args.update(bad)
    with PoseWriter(tmp_path / "p.h5", layout="coco17", classes=["x", "y"]) as w:
        with pytest.raises(ValueError, match=message):
            w.append("seq", args.pop("keypoints"), args.pop("scores"), **args)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(StoreError, match="no such pose store"):
        PoseStore(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match=f"{junk}: cannot open as HDF5"):
        PoseStore(junk)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not a heatvol pose store"):
        PoseStore(tmp_path / "other.h5")
    with PoseWriter(tmp_path / "p.h5", layout="coco17"):
        pass
    with pytest.raises(StoreError, match="has layout 'coco17', not 'penn13'"):
        PoseWriter(tmp_path / "p.h5", layout="penn13")


def test_one_writer_at_a_time(tmp_path):
    w = PoseWriter(tmp_path / "p.h5", layout="coco17")
    with pytest.raises(StoreError, match="another process is writing"):
        PoseWriter(tmp_path / "p.h5")
    w.close()
    PoseWriter(tmp_path / "p.h5").close()


def test_check_reports_broken_invariants(tmp_path):
    path = tmp_path / "p.h5"
    with PoseWriter(path, layout="coco17", classes=["a"]) as w:
        w.append("ok", *make_sequence("ok", 1, 3), label=0, img_shape=(5, 5))
        w.set_splits({"train": ["ok", "ghost"]})
    with h5py.File(path, "r+") as f:  # corrupt it behind the writer's back
        f["scores"][0, 0] = 3.0
        f["index/label"][0] = 4
    problems = PoseStore(path).check()
    assert any("ghost" in p for p in problems)
    assert any("scores outside" in p for p in problems)
    assert any("label 4 outside" in p for p in problems)


# --------------------------------------------------------------------------- kill -9 test

WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_store import make_sequence
    from heatvol import PoseWriter
    path, start = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(start)
    i = start
    while True:  # rounds of: open, append in batches, close (= compaction)
        w = PoseWriter(path, layout="coco17", commit_every=int(rng.integers(1, 6)))
        for _ in range(int(rng.integers(1, 15))):
            name = f"s{{i:05d}}"
            m, t = int(rng.integers(0, 3)), int(rng.integers(1, 40))
            w.append(name, *make_sequence(name, m, t), img_shape=(480, 640))
            print("APPENDED", name, m, t, flush=True)
            if not w._buffer:
                print("COMMITTED", flush=True)
            i += 1
        w.close()
        print("COMMITTED", flush=True)
""")


def _verify(path, appended, committed_upto, next_name, earlier):
    """The store holds every committed sequence, possibly the in-flight batch, nothing else."""
    store = PoseStore(path)
    names = set(store.names())
    committed = {n for n, _, _ in appended[:committed_upto]}
    # a commit inside append() may finish before that append's line is printed
    allowed = {n for n, _, _ in appended} | {next_name}
    assert committed <= names, f"lost: {sorted(committed - names)[:5]}"
    assert earlier <= names, f"a later writer lost earlier sequences: {sorted(earlier - names)[:5]}"
    assert names <= allowed | earlier, f"unexpected: {sorted(names - allowed - earlier)[:5]}"
    shapes = {n: (m, t) for n, m, t in appended}
    for name in names:
        rec = store[name]
        m, t = shapes.get(name, (rec.num_persons, rec.num_frames))
        kp, sc = make_sequence(name, m, t)
        np.testing.assert_array_equal(rec.keypoints, kp)
        np.testing.assert_array_equal(rec.scores, sc)
    assert store.check() == []
    store.close()
    return names


def test_kill_minus_nine_at_random_moments(tmp_path):
    """Dozens of SIGKILLs at random instants; every store opens and holds exactly the committed
    sequences; the next writer carries on from there."""
    path = tmp_path / "killed.h5"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=tests_dir))
    rnd = random.Random(1234)
    env = dict(os.environ, PYTHONHASHSEED="0")
    kills = 0
    have = set()
    start = 0
    for round_ in range(36):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(start)],
                                stdout=subprocess.PIPE, text=True, env=env)
        time.sleep(rnd.uniform(0.3, 1.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        appended, committed_upto = [], 0
        # only whole lines: the kill may cut the last one short; an APPENDED cut short is
        # still allowed to be in the store, as the next name
        for line in out.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            parts = line.split()
            if parts[0] == "APPENDED":
                appended.append((parts[1], int(parts[2]), int(parts[3])))
            elif parts[0] == "COMMITTED":
                committed_upto = len(appended)
        if not appended and not path.exists() and not (tmp_path / "killed.h5.parts").exists():
            continue  # killed before it wrote anything
        names = _verify(path, appended, committed_upto, f"s{start + len(appended):05d}", have)
        have = names
        start += len(appended) + 1
    assert kills >= 30
    assert len(have) > 50
    # a clean writer finishes on top of whatever the last kill left
    with PoseWriter(path) as w:
        w.append("final", *make_sequence("final", 1, 2), img_shape=(480, 640))
    store = PoseStore(path)
    assert set(store.names()) == have | {"final"}
    assert not (tmp_path / "killed.h5.parts").exists()
    assert not list(tmp_path.glob("killed.h5.tmp-*"))
