"""What a user sees when things go wrong (issue 13): a full disk, a damaged store, out-of-range
values, bad source files, a writer racing a reader, two renders, Ctrl-C, a redirected log.
Every failure is one line naming the file (and the sequence), with the documented exit code,
nothing finished lost and no temporary file left.

The full-disk tests need a small file system: a 1-2 MB tmpfs mounted for the test (root with
mount rights, e.g. this project's CI container). Elsewhere they fall back to RLIMIT_FSIZE (a
write past the limit fails with EFBIG, SIGXFSZ ignored), which exercises the same code path
but limits one file's size rather than the disk (HEATVOL_TEST_NO_TMPFS=1 forces it).
"""

from __future__ import annotations

import io
import os
import re
import resource
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from heatvol import PoseStore, PoseWriter
from heatvol.cli import main
from heatvol.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_USAGE
from heatvol.parts import WriterLock
from heatvol.progress import progress
from heatvol.store import COORD_LIMIT, StoreError

ROOT = Path(__file__).resolve().parents[1]


def person(rng, m, t, k=17, h=240, w=320):
    centre = rng.uniform([60, 60], [w - 60, h - 60], size=(m, 1, 1, 2))
    kp = centre + rng.normal(0, 25, size=(m, t, k, 2))
    sc = rng.uniform(0.2, 1.0, size=(m, t, k))
    return kp.astype(np.float32), sc.astype(np.float32)


def make_store(path, n=6, t=20, m=1, split_empty=False):
    with PoseWriter(path, layout="coco17", classes=["a", "b"]) as w:
        for i in range(n):
            rng = np.random.default_rng(i)
            w.append(f"s{i}", *person(rng, m, t), label=i % 2, img_shape=(240, 320))
        names = [f"s{i}" for i in range(n)]
        w.set_splits({"train": names, "test": [] if split_empty else names[:2]})
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ".tmp" in p.name or p.name.endswith(".lock"))


def one_error_line(res, *needles):
    """The CLI output is exactly one `heatvol: error:` line holding every needle."""
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heatvol: error: "), res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- item 4: full disk


class SmallDisk:
    """A folder on a file system with little room: a tmpfs of ``size`` bytes, or (not root)
    an RLIMIT_FSIZE of ``rlimit`` bytes on every file the command writes (smaller than one
    part file, since the limit is per file: the first part then fails)."""

    def __init__(self, root: Path, size: int, rlimit: int):
        self.dir = root / "small"
        self.dir.mkdir()
        self.size = size
        self.rlimit = rlimit
        self.kind = None
        if os.geteuid() == 0 and not os.environ.get("HEATVOL_TEST_NO_TMPFS"):
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                  str(self.dir)], capture_output=True, text=True)
            if res.returncode == 0:
                self.kind = "tmpfs"
        if self.kind is None:
            self.kind = "rlimit"
        self.limited = True

    def run(self, *args: str, patch: str = "") -> subprocess.CompletedProcess:
        """``heatvol ARGS`` in a subprocess (a crash there fails the test, not pytest);
        ``patch``: Python run first (smaller commit intervals)."""
        code = (f"import sys; sys.argv[0] = 'heatvol'\n{patch}\n"
                f"from heatvol.cli import main\nmain()")

        def limit():
            if self.kind == "rlimit" and self.limited:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (self.rlimit, self.rlimit))

        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, preexec_fn=limit, cwd=ROOT, timeout=600)

    def free_space(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=256m", str(self.dir)], check=True)
        self.limited = False

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.dir)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size, rlimit=16 << 10):
        disk = SmallDisk(tmp_path, size, rlimit)
        disks.append(disk)
        return disk

    yield make
    for d in disks:
        d.close()


def write_penn_mat(path: Path, rng, frames: int, x=None) -> None:
    """A Penn Action label file; random coordinates compress badly, so files are big."""
    x = rng.random((frames, 13)) * 400 if x is None else x
    scipy.io.savemat(str(path), {
        "action": "squat", "pose": "front", "x": x, "y": rng.random((frames, 13)) * 300,
        "visibility": (rng.random((frames, 13)) > 0.3).astype(np.uint8),
        "train": np.array([[1]], np.int32), "bbox": np.zeros((frames, 4)),
        "dimensions": np.array([[360, 480, frames]], np.uint16),
        "nframes": np.array([[frames % 256]], np.uint8)})


def test_import_into_a_full_disk_keeps_what_was_committed_and_resumes(tmp_path, small_disk):
    src = tmp_path / "penn"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        write_penn_mat(src / f"{i:04d}.mat", rng, frames=1500)
    disk = small_disk(1 << 20)
    out = disk.dir / "p.h5"
    patch = "import heatvol.importers as i; i.COMMIT_EVERY_SEQUENCES = 4"
    res = disk.run("import", "penn-action", str(src), "--out", str(out), "-q", patch=patch)
    assert res.returncode == EXIT_ERROR, (disk.kind, res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    m = re.fullmatch(rf"heatvol: error: {re.escape(str(out))}: no space left on device; "
                     rf"(\d+) sequences kept, rerun to continue", lines[0])
    assert m, lines[0]
    kept = int(m.group(1))
    assert leftovers(disk.dir) == [], "temporary files or the lock were left behind"
    if disk.kind == "tmpfs":
        assert 0 < kept < 40 and kept % 4 == 0
        with PoseStore(out) as store:  # readable on the full disk, exactly what was kept
            assert len(store) == kept and store.check() == []
        again = disk.run("import", "penn-action", str(src), "--out", str(out), "-q", patch=patch)
        assert again.returncode == EXIT_ERROR and "no space left on device" in again.stderr
        assert "Traceback" not in again.stderr
    disk.free_space()
    res = disk.run("import", "penn-action", str(src), "--out", str(out), "-q", patch=patch)
    assert res.returncode == 0, res.stderr[-2000:]
    with PoseStore(out) as store:
        assert len(store) == 40 and store.check() == []
        assert sorted(store.split("train")) == sorted(f"{i:04d}" for i in range(40))
    assert not (disk.dir / "p.h5.parts").exists() and leftovers(disk.dir) == []


def test_a_merge_without_room_leaves_readable_parts_and_says_so(tmp_path, small_disk):
    """Every sequence committed as parts, but no room for the merged main file."""
    disk = small_disk(1 << 20)
    if disk.kind != "tmpfs":
        pytest.skip("needs a small tmpfs (a per-file size limit does not stop the merge)")
    out = disk.dir / "p.h5"
    rng = np.random.default_rng(1)
    n = 0

    def used():
        return sum(p.stat().st_size for p in (disk.dir / "p.h5.parts").glob("part-*"))

    with PoseWriter(out, layout="coco17", compact_on_close=False, commit_every=1) as w:
        while n == 0 or used() < 0.55 * (1 << 20):  # parts fill more than half of the disk
            kp = (rng.random((1, 400, 17, 2)) * 300).astype(np.float32)
            w.append(f"r{n}", kp, rng.random((1, 400, 17)).astype(np.float32),
                     img_shape=(240, 320))
            n += 1
    w = PoseWriter(out)
    w.close()
    assert w.note and "not merged" in w.note and "no space left on device" in w.note
    assert leftovers(disk.dir) == []
    with PoseStore(out) as store:
        assert len(store) == n and store.check() == []


def test_render_into_a_full_disk(tmp_path, small_disk):
    store = make_store(tmp_path / "poses.h5", n=24, t=48)
    disk = small_disk(1 << 20)
    out = disk.dir / "v.h5"
    patch = ("import functools, heatvol.render as r; "
             "r.render_store = functools.partial(r.render_store, commit_every=2)")
    args = ("render", str(store), "--out", str(out), "--size", "64", "--clip-len", "48", "-q",
            "--render-device", "cpu")
    res = disk.run(*args, patch=patch)
    assert res.returncode == EXIT_ERROR, (disk.kind, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    m = re.fullmatch(rf"heatvol: error: {re.escape(str(out))}: no space left on device; "
                     rf"(\d+) samples kept, rerun to continue", lines[0])
    assert m, lines[0]
    assert leftovers(disk.dir) == []
    disk.free_space()
    res = disk.run(*args, patch=patch)
    assert res.returncode == 0, res.stderr[-2000:]
    from heatvol.volumes import VolumeFile
    with VolumeFile(out) as vf:
        assert len(vf) == 24
    assert leftovers(disk.dir) == [] and not (disk.dir / "v.h5.parts").exists()


# --------------------------------------------------------------------------- item 5: damage


def flip_chunk_bytes(path: Path, dataset: str, chunk_index: int) -> None:
    """Flip bytes in the middle of one stored chunk of ``dataset``."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk_index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        data = bytearray(fh.read(16))
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0x5A for b in data))


@pytest.fixture
def damaged_store(tmp_path):
    """Three sequences of 2,048 rows: one chunk each; the middle one's chunk damaged."""
    path = make_store(tmp_path / "poses.h5", n=3, t=2048)
    flip_chunk_bytes(path, "keypoints", 1)
    return path


def test_a_damaged_chunk_names_the_file_and_the_sequence(damaged_store):
    store = PoseStore(damaged_store)
    assert store["s0"].num_frames == 2048  # the others read fine
    with pytest.raises(StoreError, match=r"poses\.h5: sequence 's1': damaged, cannot be read"):
        store["s1"]
    problems = store.check()
    assert len(problems) == 1 and problems[0].startswith("s1: damaged"), problems


def test_cli_on_a_damaged_store(damaged_store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["check", str(damaged_store)])
    assert res.exit_code == EXIT_ERROR
    out = res.output.strip().splitlines()
    assert any("s1: damaged, cannot be read" in line for line in out), res.output
    assert not any("s0" in line or "s2" in line for line in out)
    assert out[-1] == f"heatvol: error: 1 problems in {damaged_store}"
    res = runner.invoke(main, ["show", str(damaged_store), "s1", "--out", str(tmp_path / "a.png")])
    assert res.exit_code == EXIT_ERROR
    one_error_line(res, str(damaged_store), "'s1'", "damaged")
    out = tmp_path / "v.h5"
    res = runner.invoke(main, ["render", str(damaged_store), "--out", str(out), "-q",
                               "--render-device", "cpu", "--size", "16", "--clip-len", "8"])
    assert res.exit_code == EXIT_ERROR
    one_error_line(res, str(damaged_store), "'s1'", "damaged")
    assert leftovers(tmp_path) == []
    with PoseStore(damaged_store) as store:  # training's DataLoader loads it all at once
        with pytest.raises(StoreError, match="damaged"):
            store.load()


def test_damaged_metadata_is_one_line(tmp_path):
    path = make_store(tmp_path / "poses.h5")
    with h5py.File(path, "r") as f:
        offset = f["meta"].id.get_offset()
        size = f["meta"].id.get_storage_size()
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 3)
        fh.write(b"\xff\xfe\x00{{{")
    for args in (["check", str(path)], ["info", str(path)],
                 ["render", str(path), "--out", str(tmp_path / "v.h5"), "-q"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == EXIT_ERROR, (args, res.output)
        one_error_line(res, str(path))
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- item 6: render


def test_render_reports_an_empty_split_and_leaves_nothing(tmp_path):
    path = make_store(tmp_path / "poses.h5", split_empty=True)
    out = tmp_path / "v.h5"
    res = CliRunner().invoke(main, ["render", str(path), "--split", "test", "--out", str(out),
                                    "-q", "--render-device", "cpu"])
    assert res.exit_code == EXIT_ERROR
    one_error_line(res, "split 'test' is empty")
    assert "Chunk shape" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.h5"]


def test_render_reports_an_empty_store(tmp_path):
    path = tmp_path / "poses.h5"
    with PoseWriter(path, layout="coco17"):
        pass
    res = CliRunner().invoke(main, ["render", str(path), "--out", str(tmp_path / "v.h5"), "-q"])
    assert res.exit_code == EXIT_ERROR
    one_error_line(res, "holds no sequences")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.h5"]


def test_render_survives_the_store_being_deleted_meanwhile(tmp_path, monkeypatch):
    """The store is a snapshot: deleting its file after it was opened changes nothing."""
    path = make_store(tmp_path / "poses.h5")
    import heatvol.render.pipeline as pipeline

    real = pipeline._render

    def delete_then_render(store, *args, **kwargs):
        os.unlink(path)
        return real(store, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_render", delete_then_render)
    res = pipeline.render_store(path, tmp_path / "v.h5", size=16, clip_len=8,
                                render_device="cpu", progress=False)
    assert res["rendered"] == 6


# --------------------------------------------------------------------------- item 7: ranges


@pytest.mark.parametrize("value", [1e30, 3e38, -2e6])
def test_writer_refuses_coordinates_out_of_range(tmp_path, value):
    kp, sc = person(np.random.default_rng(0), 1, 4)
    kp[0, 1, 3, 0] = value
    with PoseWriter(tmp_path / "p.h5", layout="coco17") as w:
        with pytest.raises(ValueError, match=r"s: coordinates must lie in \[-1e\+06, 1e\+06\]"):
            w.append("s", kp, sc, img_shape=(240, 320))


def _write_behind_the_back(path, dataset, value):
    with h5py.File(path, "r+") as f:
        data = f[dataset][()]
        data[5] = value
        del f[dataset]
        f.create_dataset(dataset, data=data, maxshape=(None,) + data.shape[1:],
                         chunks=(2048,) + data.shape[1:])


@pytest.mark.parametrize("dataset,value,problem", [
    ("keypoints", 1e30, "coordinates outside"), ("keypoints", 3e38, "coordinates outside"),
    ("scores", 9.9, "scores outside [0, 1]"), ("scores", -1.0, "scores outside [0, 1]")])
def test_out_of_range_values_written_behind_the_api(tmp_path, dataset, value, problem):
    path = make_store(tmp_path / "poses.h5", n=2)
    _write_behind_the_back(path, dataset, value)
    problems = PoseStore(path).check()
    assert len(problems) == 1 and problems[0].startswith("s0: ") and problem in problems[0]
    runner = CliRunner()
    for args in (["show", str(path), "s0", "--out", str(tmp_path / "a.png")],
                 ["show", str(path), "s0", "--volume", "--out", str(tmp_path / "b.png")],
                 ["render", str(path), "--out", str(tmp_path / "v.h5"), "-q",
                  "--render-device", "cpu", "--size", "16", "--clip-len", "8"]):
        res = runner.invoke(main, args)
        assert res.exit_code == EXIT_ERROR, (args, res.output)
        one_error_line(res, str(path), "'s0'", problem)
    assert leftovers(tmp_path) == []


def test_every_command_is_safe_on_the_extremes_check_accepts(tmp_path):
    path = tmp_path / "poses.h5"
    kp = np.full((2, 6, 17, 2), COORD_LIMIT, np.float32)
    kp[1] = -COORD_LIMIT
    kp[0, :, :3] = [[0.5, 0.5]]
    with PoseWriter(path, layout="coco17") as w:
        w.append("edge", kp, np.ones((2, 6, 17), np.float32), img_shape=(1, 1))
    assert PoseStore(path).check() == []
    runner = CliRunner()
    for args in (["show", str(path), "edge", "--out", str(tmp_path / "a.png")],
                 ["show", str(path), "edge", "--volume", "--out", str(tmp_path / "b.png")],
                 ["render", str(path), "--out", str(tmp_path / "v.h5"), "-q",
                  "--render-device", "cpu", "--size", "16", "--clip-len", "8"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
    from heatvol.volumes import VolumeFile
    with VolumeFile(tmp_path / "v.h5") as vf:
        vol = vf["edge"]
        assert np.isfinite(vol).all() and vol.min() >= 0 and vol.max() <= 1


# --------------------------------------------------------------------------- item 9: Penn files


def test_penn_all_nan_and_renamed_text_files(tmp_path):
    src = tmp_path / "penn"
    src.mkdir()
    rng = np.random.default_rng(3)
    write_penn_mat(src / "0001.mat", rng, frames=5)
    write_penn_mat(src / "0002.mat", rng, frames=5, x=np.full((5, 13), np.nan))
    (src / "0003.mat").write_text("frame,x,y\n1,2,3\n")
    out = tmp_path / "p.h5"
    res = CliRunner().invoke(main, ["import", "penn-action", str(src), "--out", str(out), "-q"])
    assert res.exit_code == EXIT_SKIPPED, res.output
    assert (f"heatvol: warning: {src / '0002.mat'}: no joint has finite coordinates in any "
            f"frame (all NaN or infinite); imported with every joint missing") in res.output
    assert (f"heatvol: skipped {src / '0003.mat'}: not a MATLAB .mat file (it starts with "
            f"b'frame,x,y\\n1,2,3\\n'") in res.output
    assert "IndexError" not in res.output
    assert (f"{out}: imported 2 sequences (1 with no joint present in any frame), "
            f"1 bad files skipped") in res.output


# --------------------------------------------------------------------------- item 11: races


def test_reader_retries_across_the_merge_swap(tmp_path, monkeypatch):
    """A reader lists main + parts, then a writer merges (new main, parts deleted) before the
    reader opens the parts: the reader takes its snapshot again instead of failing."""
    import heatvol.store as store_mod

    path = tmp_path / "p.h5"
    with PoseWriter(path, layout="coco17", compact_on_close=False, commit_every=1) as w:
        for i in range(3):
            w.append(f"s{i}", *person(np.random.default_rng(i), 1, 4), img_shape=(240, 320))
    assert (tmp_path / "p.h5.parts").is_dir()
    real = store_mod._open_h5
    raced = []

    def racing(fpath):
        if fpath.parent.name == "p.h5.parts" and not raced:
            raced.append(fpath)
            monkeypatch.setattr(store_mod, "_open_h5", real)
            PoseWriter(path).close()  # merges every part into a new main, deletes the parts
            monkeypatch.setattr(store_mod, "_open_h5", racing)
        return real(fpath)

    monkeypatch.setattr(store_mod, "_open_h5", racing)
    with PoseStore(path) as store:
        assert raced and sorted(store.names()) == ["s0", "s1", "s2"]
        assert store["s2"].num_frames == 4


def test_one_render_at_a_time_per_volume_file(tmp_path):
    path = make_store(tmp_path / "poses.h5")
    out = tmp_path / "v.h5"
    lock = WriterLock(out).acquire()  # another render holds the file
    try:
        res = CliRunner().invoke(main, ["render", str(path), "--out", str(out), "-q",
                                        "--render-device", "cpu", "--size", "16"])
        assert res.exit_code == EXIT_ERROR
        one_error_line(res, f"{out}: another process is writing this volume file")
        assert not out.exists() and not (tmp_path / "v.h5.parts").exists()
    finally:
        lock.release()


# --------------------------------------------------------------------------- item 12: exit codes


def test_exit_codes(tmp_path, monkeypatch):
    path = make_store(tmp_path / "poses.h5")
    runner = CliRunner()
    assert runner.invoke(main, ["render", str(path), "--size", "0"]).exit_code == EXIT_USAGE
    res = runner.invoke(main, ["show", str(path), "s0", "--out", str(tmp_path / "a.jpg")])
    assert res.exit_code == EXIT_USAGE
    res = runner.invoke(main, ["render", str(path), "--out", str(path)])
    assert res.exit_code == EXIT_USAGE
    assert runner.invoke(main, ["check", str(tmp_path / "none.h5")]).exit_code == EXIT_ERROR

    import heatvol.render as render

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "render_store", interrupted)
    res = runner.invoke(main, ["render", str(path), "--out", str(tmp_path / "v.h5")])
    assert res.exit_code == EXIT_INTERRUPTED
    one_error_line(res, "interrupted; samples rendered so far are kept")
    import heatvol.importers as importers
    monkeypatch.setattr(importers, "import_dataset", interrupted)
    res = runner.invoke(main, ["import", "penn-action", str(tmp_path), "--out",
                               str(tmp_path / "x.h5")])
    assert res.exit_code == EXIT_INTERRUPTED
    one_error_line(res, "interrupted; sequences committed so far are in the store")


def test_exit_codes_are_documented():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in doc, code
    assert "docs/cli.md" in (ROOT / "README.md").read_text()


# --------------------------------------------------------------------------- item 13: progress


def test_progress_in_a_log_is_a_line_every_few_percent():
    log = io.StringIO()
    with progress(total=1000, desc="render", unit="sample", stream=log) as bar:
        for _ in range(1000):
            bar.update()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 15 <= len(lines) <= 21, lines
    assert lines[0].startswith("render: 5% (50/1,000 samples") and "100%" in lines[-1]
    # the parts of tqdm's interface heatvol uses (extract, train) work in a log as well
    log = io.StringIO()
    bar = progress(total=20, desc="epoch 1/3", unit="step", stream=log)
    bar.set_description("epoch 2/3")
    for _ in range(20):
        bar.update(1)
        bar.set_postfix(loss="0.500")
    bar.write("a message", file=log)
    bar.close()
    assert bar.n == 20 and not bar.disable
    assert log.getvalue().splitlines()[-1] == "epoch 2/3: 100% (20/20 steps, " + \
        log.getvalue().splitlines()[-1].split("steps, ", 1)[1]
    assert "loss=0.500" in log.getvalue() and "a message\n" in log.getvalue()
    log = io.StringIO()
    with progress(total=4, desc="val 10", unit="batch", stream=log) as bar:
        bar.update(4)
    assert "(4/4 batches, " in log.getvalue()
    silent = io.StringIO()
    with progress(range(5), desc="x", stream=silent, enabled=False) as bar:
        assert list(bar) == [0, 1, 2, 3, 4]
    assert silent.getvalue() == ""


def test_import_log_has_no_carriage_returns(tmp_path):
    src = tmp_path / "penn"
    src.mkdir()
    rng = np.random.default_rng(4)
    for i in range(60):
        write_penn_mat(src / f"{i:04d}.mat", rng, frames=4)
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        res = subprocess.run([sys.executable, "-m", "heatvol.cli", "import", "penn-action",
                              str(src), "--out", str(tmp_path / "p.h5")], stdout=fh,
                             stderr=subprocess.STDOUT, cwd=ROOT, timeout=300)
    assert res.returncode == 0
    data = log.read_bytes()  # (read_text would turn each \r into a line break)
    assert b"\r" not in data
    assert 2 <= len(data.splitlines()) <= 25, data


# --------------------------------------------------------------------------- item 14: info


def test_info_of_a_whole_store_volume_file_names_no_split_none(tmp_path):
    path = make_store(tmp_path / "poses.h5")
    out = tmp_path / "v.h5"
    res = CliRunner().invoke(main, ["render", str(path), "--out", str(out), "-q",
                                    "--render-device", "cpu", "--size", "16", "--clip-len", "8"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["info", str(out)])
    assert res.exit_code == 0
    assert "None" not in res.output, res.output
    assert "split       (all sequences)" in res.output
