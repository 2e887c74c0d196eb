"""Sharded rendering and extraction (issue 15 items 3-4): the split, the launcher environment,
shards of a real Penn Action render and of a real extraction merging into exactly what one
process makes, torchrun on the CPU, a shard killed with SIGKILL and rerun, and merges that
overlap or miss a sequence failing with one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, shared_data
from heatvol.cli import main
from heatvol.merge import MergeError, manifest_path, merge_parts, shard_path
from heatvol.shard import (Shard, ShardError, assign, parse_shard, pin_gpu, render_shard,
                           resolve_shard, shard_from_env)

RENDER = dict(size=32, clip_len=12, progress=False)  # small: the test is about the plumbing
PENN_FILES = 60


# --------------------------------------------------------------------------- arithmetic


def test_assign_is_deterministic_balanced_and_complete():
    rng = np.random.default_rng(0)
    names = [f"v{i:04d}" for i in range(500)]
    work = rng.integers(30, 3000, len(names)).astype(float)
    split = assign(names, work, 7)
    assert split == assign(names, list(work), 7)  # same inputs, same split, any process
    flat = sorted(i for s in split for i in s)
    assert flat == list(range(len(names)))  # every item exactly once
    loads = [work[s].sum() for s in split]
    # greedy LPT: the largest shard exceeds the mean by at most the largest item
    assert max(loads) <= work.sum() / 7 + work.max()
    assert max(loads) / min(loads) < 1.05
    # ties: equal work goes by name, to the lower shard first
    assert assign(["b", "a", "c"], [1, 1, 1], 2) == [[1, 2], [0]]
    assert assign(["a"], [5], 3) == [[0], [], []]


def test_shard_from_the_option_and_the_environment():
    assert parse_shard("1/4") == Shard(1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ShardError, match="shard"):
            parse_shard(bad)
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    s = shard_from_env(torchrun)
    assert (s.index, s.count, s.local_rank) == (3, 4, 1)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None  # a single process
    assert shard_from_env({}) is None
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4",
             "SLURM_ARRAY_TASK_MIN": "3"}
    s = shard_from_env(slurm)
    assert (s.index, s.count, s.local_rank) == (2, 4, None)
    with pytest.raises(ShardError, match="contiguous"):
        shard_from_env({**slurm, "SLURM_ARRAY_TASK_ID": "9"})
    with pytest.raises(ShardError, match="RANK"):
        shard_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    assert resolve_shard("0/2", torchrun) == Shard(0, 2)  # the option wins
    assert resolve_shard(None, torchrun).index == 3


def test_each_torchrun_rank_gets_its_own_gpu():
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}
    assert pin_gpu(Shard(1, 2, local_rank=1), env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == "5"
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}
    line = pin_gpu(Shard(2, 3, local_rank=2), env)
    assert env["CUDA_VISIBLE_DEVICES"] == "4" and "shares GPU" in line
    env = {"CUDA_VISIBLE_DEVICES": "7"}  # the launcher gave this process one GPU already
    assert pin_gpu(Shard(1, 2, local_rank=1), env) is None and env["CUDA_VISIBLE_DEVICES"] == "7"
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}  # --shard by hand, SLURM arrays: left alone
    assert pin_gpu(Shard(1, 2), env) is None and env["CUDA_VISIBLE_DEVICES"] == "4,5"


# --------------------------------------------------------------------------- Penn Action


@pytest.fixture(scope="module")
def penn(tmp_path_factory):
    """A pose store of the first PENN_FILES Penn Action files and its one-process render."""
    from heatvol.importers import import_dataset
    from heatvol.render import render_store

    src = shared_data("penn_action")
    root = tmp_path_factory.mktemp("penn")
    (root / "mat").mkdir()
    for f in sorted(src.glob("*.mat"))[:PENN_FILES]:
        shutil.copy(f, root / "mat" / f.name)
    poses = root / "poses.h5"
    import_dataset("penn-action", root / "mat", poses, progress=False)
    one = root / "one.h5"
    render_store(poses, one, **RENDER)
    return poses, one


def assert_same_volumes(a_path: Path, b_path: Path) -> None:
    """Byte-equal: names in order, labels, settings, decompressed arrays and raw chunks."""
    from heatvol.parts import PartFiles
    from heatvol.volumes import VolumeFile

    assert not PartFiles(b_path).list()  # one finished file
    with VolumeFile(a_path) as a, VolumeFile(b_path) as b:
        assert a.names() == b.names()
        assert a.settings == b.settings
        assert np.array_equal(a.labels, b.labels)
        for n in a.names():
            assert a.raw_chunk(n) == b.raw_chunk(n), n
            assert np.array_equal(a[n], b[n]), n


def assert_same_store(a_path: Path, b_path: Path) -> None:
    """Equal arrays, index columns and metadata, sequences in the same order."""
    from heatvol.store import PoseStore

    with PoseStore(a_path) as a, PoseStore(b_path) as b:
        assert a.names() == b.names()
        for attr in ("classes", "splits", "failures", "attrs", "dims"):
            assert getattr(a, attr) == getattr(b, attr), attr
        assert a.layout.name == b.layout.name
        for n in a.names():
            ra, rb = a[n], b[n]
            assert np.array_equal(ra.keypoints, rb.keypoints), n
            assert np.array_equal(ra.scores, rb.scores), n
            assert (ra.label, ra.img_shape, ra.fps, ra.source) == \
                (rb.label, rb.img_shape, rb.fps, rb.source), n
        assert b.check() == []


def test_two_render_shards_merge_into_the_one_process_file(penn, tmp_path):
    from heatvol.volumes import VolumeFile

    poses, one = penn
    out = tmp_path / "volumes.h5"
    r1 = render_shard(poses, out, Shard(1, 2), **RENDER)  # any order: the last one merges
    assert not r1["merged"] and r1["waiting"] == [0] and not out.exists()
    m = json.loads(manifest_path(shard_path(out, 1, 2)).read_text())
    with VolumeFile(one) as vf:
        order = vf.names()
    assert m["names"] == [order[p] for p in m["positions"]] and len(m["names"]) == r1["rendered"]
    assert m["positions"] == sorted(m["positions"]) and (m["shard"], m["count"]) == (1, 2)
    r0 = render_shard(poses, out, Shard(0, 2), **RENDER)
    assert r0["merged"] and r0["rendered"] + r1["rendered"] == PENN_FILES
    assert abs(r0["rendered"] - r1["rendered"]) <= 3  # balanced by frames
    assert_same_volumes(one, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.h5"]  # shard files gone
    again = render_shard(poses, out, Shard(1, 2), **RENDER)  # a rerun after the merge
    assert again["merged"] and again["part"] is None and again["rendered"] == 0


def test_store_parts_merge_into_the_original_store(penn, tmp_path):
    """Stores join keeping classes, splits and labels; the order is the parts' then each
    part's own (no manifests: a merge by hand)."""
    from heatvol.store import PoseStore, PoseWriter

    poses, _ = penn
    parts = [tmp_path / "a.h5", tmp_path / "b.h5"]
    with PoseStore(poses) as src:
        names = src.names()
        for part, chosen in zip(parts, (names[:25], names[25:])):
            with PoseWriter(part, layout=src.layout.name, classes=src.classes, mode="w") as w:
                w.set_splits(src.splits)
                for n in chosen:
                    r = src[n]
                    w.append(n, r.keypoints, r.scores, label=r.label, img_shape=r.img_shape,
                             fps=r.fps, source=r.source)
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "all.h5"), *map(str, parts)])
    assert res.exit_code == 0, res.output
    assert f"{PENN_FILES} sequences" in res.output
    assert_same_store(poses, tmp_path / "all.h5")


def _volume_copy(src: Path, dst: Path, names) -> None:
    from heatvol.volumes import VolumeFile, VolumeWriter

    with VolumeFile(src) as vf, VolumeWriter(dst, vf.settings, overwrite=True) as w:
        for n in names:
            w.append(n, vf.raw_chunk(n)[1], vf.label(n))


def test_merges_that_overlap_or_miss_a_sequence_fail_naming_it(penn, tmp_path):
    from heatvol.volumes import VolumeFile

    poses, one = penn
    out = tmp_path / "v.h5"
    for k in (0, 1):
        render_shard(poses, out, Shard(k, 2), merge=False, **RENDER)
    parts = [shard_path(out, k, 2) for k in (0, 1)]
    # a sequence missing from its shard's part
    with VolumeFile(parts[1]) as vf:
        names = vf.names()
    _volume_copy(parts[1], tmp_path / "cut.h5", names[1:])
    shutil.move(tmp_path / "cut.h5", parts[1])
    res = CliRunner().invoke(main, ["merge", str(out), *map(str, parts)])
    assert res.exit_code == 1 and not out.exists()
    line = res.output.strip()
    assert "\n" not in line and f"sequence {names[0]!r} of shard 1/2 is missing" in line
    # a shard missing from the merge
    with pytest.raises(MergeError, match=r"shard-1-of-2: shard 1/2 is missing"):
        merge_parts(out, parts[:1])
    # two files holding the same sequence (a merge by hand, no manifests)
    with VolumeFile(one) as vf:
        all_names = vf.names()
    _volume_copy(one, tmp_path / "a.h5", all_names[:10])
    _volume_copy(one, tmp_path / "b.h5", all_names[9:])
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "ab.h5"), str(tmp_path / "a.h5"),
                                    str(tmp_path / "b.h5")])
    assert res.exit_code == 1 and not (tmp_path / "ab.h5").exists()
    assert res.output.count("\n") == 1
    assert f"sequence {all_names[9]!r} is in both" in res.output
    # without the overlap, the hand merge is the one-process file again
    _volume_copy(one, tmp_path / "b.h5", all_names[10:])
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "ab.h5"), str(tmp_path / "a.h5"),
                                    str(tmp_path / "b.h5"), "--remove-parts"])
    assert res.exit_code == 0, res.output
    assert_same_volumes(one, tmp_path / "ab.h5")
    assert not (tmp_path / "a.h5").exists()


_KILLABLE = """
import sys
from heatvol.shard import Shard, render_shard
render_shard(sys.argv[1], sys.argv[2], Shard(0, 2), size=32, clip_len=12, progress=False,
             commit_every=2, workers=1)
"""


def test_a_shard_killed_with_sigkill_resumes_without_redoing_the_others(penn, tmp_path):
    poses, one = penn
    out = tmp_path / "volumes.h5"
    r1 = render_shard(poses, out, Shard(1, 2), **RENDER)
    assert not r1["merged"]
    part1 = shard_path(out, 1, 2)
    stamp = part1.stat().st_mtime_ns, part1.stat().st_ino
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(poses), str(out)], env=env)
    parts_dir = shard_path(out, 0, 2).with_name(shard_path(out, 0, 2).name + ".parts")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts_dir.is_dir() and len(list(parts_dir.glob("part-*.h5"))) >= 2:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail("the shard finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert (part1.stat().st_mtime_ns, part1.stat().st_ino) == stamp
    # the rerun resumes shard 0 only, from what its killed run committed
    r0 = render_shard(poses, out, Shard(0, 2), **RENDER)
    assert r0["skipped"] >= 4 and r0["rendered"] + r0["skipped"] == r0["total"]
    assert r0["merged"]
    assert_same_volumes(one, out)
    assert r1["rendered"] + r0["total"] == PENN_FILES  # shard 1's share was never redone


def test_torchrun_two_ranks_on_the_cpu(penn, tmp_path):
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torchrun is not available here ({exc})")
    poses, one = penn
    out = tmp_path / "volumes.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "heatvol.cli", "render", str(poses), "--out", str(out), "--size", "32",
           "--clip-len", "12", "--render-device", "cpu", "-q"]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish in 300 s")
    if res.returncode != 0 and "heatvol" not in res.stdout + res.stderr:
        pytest.skip(f"torchrun cannot start here: {res.stderr.strip().splitlines()[-1:]}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "shard 0/2 done" in res.stdout and "shard 1/2 done" in res.stdout
    assert res.stdout.count("all shards merged") == 1
    assert_same_volumes(one, out)


# --------------------------------------------------------------------------- extraction


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Folder-per-class short clips cut from the sample videos (2 frames, 480 px wide), and a
    corrupt file: classes and a failure must survive the merge."""
    import cv2

    videos = shared_data("videos")
    root = tmp_path_factory.mktemp("clips") / "v"
    plan = {"a": ["street_5frames.mp4", "demo_skeleton.mp4"], "b": ["ntu_sample.avi"]}
    for cls, files in plan.items():
        (root / cls).mkdir(parents=True)
        for name in files:
            cap = cv2.VideoCapture(str(videos / name))
            dst = root / cls / (Path(name).stem + ".avi")
            vw = None
            for _ in range(2):
                ok, frame = cap.read()
                assert ok
                h, w = frame.shape[:2]
                frame = cv2.resize(frame, (480, round(h * 480 / w)))
                if vw is None:
                    vw = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                                         frame.shape[1::-1])
                vw.write(frame)
            vw.release()
            cap.release()
    (root / "b" / "broken.avi").write_bytes(b"not a video" * 100)
    return root


MODELS = Path(os.environ.get("HEATVOL_MODELS") or ROOT.parent / "shared" / "models")


@pytest.mark.parametrize("backend", ["topdown", "blazepose"])
def test_two_extraction_shards_merge_into_the_one_process_store(clips, tmp_path, backend):
    from heatvol.extract import extract_videos
    from heatvol.shard import extract_shard

    if backend == "blazepose":
        pytest.importorskip("mediapipe", reason="blazepose backend (mediapipe) not installed")
        options = {"backend": backend}
    else:
        if not (MODELS / "nanodet.onnx").is_file():
            pytest.skip(f"model files not found in {MODELS} (set HEATVOL_MODELS)")
        options = {"backend": backend, "models_dir": MODELS, "preset": "fast"}
    one = tmp_path / "one.h5"
    rep = extract_videos([clips], one, progress=False, **options)
    assert len(rep.extracted) == 3 and list(rep.failed) == ["broken"]
    assert any(rep.persons.values())  # people were found: the arrays compared are not empty
    out = tmp_path / "poses.h5"
    reports = [extract_shard([clips], out, Shard(k, 2), progress=False, **options)
               for k in (1, 0)]
    assert [info["merged"] for _, info in reports] == [False, True]
    assert sum(len(r.extracted) for r, _ in reports) == 3
    assert_same_store(one, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "poses.h5"]


def test_more_shards_than_sequences_through_the_cli(tmp_path):
    """Shards given nothing write nothing and still count as done; the CLI reads --shard and
    the torchrun environment, and a bad --shard is a usage error."""
    from heatvol.store import PoseWriter

    rng = np.random.default_rng(1)
    poses = tmp_path / "poses.h5"
    with PoseWriter(poses, layout="coco17", classes=["x", "y"]) as w:
        for i, t in enumerate((9, 30, 17)):
            kp = rng.uniform(10, 90, (2, t, 17, 2))
            w.append(f"s{i}", kp, rng.uniform(0.1, 1, (2, t, 17)), label=i % 2,
                     img_shape=(100, 120))
        w.set_splits({"train": ["s2", "s0", "s1"]})
    args = ["render", str(poses), "--split", "train", "--size", "24", "--clip-len", "8",
            "--render-device", "cpu", "-q"]
    runner = CliRunner()
    res = runner.invoke(main, args + ["--out", str(tmp_path / "one.h5")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "v.h5"
    for k in (4, 0, 2, 1):
        res = runner.invoke(main, args + ["--out", str(out)],
                            env={"RANK": str(k), "WORLD_SIZE": "5"})
        assert res.exit_code == 0, res.output
        assert "waiting for shard(s)" in res.output and not out.exists()
    res = runner.invoke(main, args + ["--out", str(out), "--shard", "3/5"])
    assert res.exit_code == 0 and "all shards merged" in res.output, res.output
    assert_same_volumes(tmp_path / "one.h5", out)  # the split's order, s2 first
    res = runner.invoke(main, args + ["--out", str(out), "--shard", "5/5"])
    assert res.exit_code == 2 and "need 0 <= K < N" in res.output


def test_a_hand_merge_of_files_with_different_codecs(penn, tmp_path):
    """Parts of one job share a codec and are copied chunk for chunk; a part written with
    another codec is decoded and encoded with the first part's (the arrays stay equal)."""
    from heatvol.volumes import VolumeFile, VolumeWriter

    _, one = penn
    with VolumeFile(one) as vf:
        names, settings = vf.names(), vf.settings
        other = next(c for c in ("deflate", "blosc-lz4") if c != vf.codec)
        with VolumeWriter(tmp_path / "b.h5", settings, codec=other) as w:
            for n in names[20:]:
                w.append(n, vf[n], vf.label(n))
    _volume_copy(one, tmp_path / "a.h5", names[:20])
    merge_parts(tmp_path / "ab.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
    assert_same_volumes(one, tmp_path / "ab.h5")
