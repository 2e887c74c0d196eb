"""`heatvol render` / volume files: shapes, labels, settings, resume after kill -9, `heatvol show`."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from heatvol import PoseWriter, render_volume
from heatvol.cli import main
from heatvol.store import PoseStore, StoreError
from heatvol.transforms import Clip, Compose, Resize, SubjectCrop, UniformSample
from heatvol.render import render_store
from heatvol.volumes import VolumeFile

from conftest import shared_data


def expected_volume(rec, size, clip_len, num_clips, mode):
    pipe = Compose([UniformSample(clip_len, num_clips=num_clips, train=False),
                    SubjectCrop(padding=0.25, threshold=10, hw_ratio=1.0), Resize(size)])
    clip = pipe(Clip(rec.keypoints, rec.scores, rec.img_shape), None)
    m = clip.keypoints.shape[0]
    vols = []
    for c in range(num_clips):
        frames = slice(c * clip_len, (c + 1) * clip_len)
        vols.append(render_volume(clip.keypoints[:, frames], clip.scores[:, frames], size=size,
                                  mode=mode, render_device="reference"))
    assert m == rec.num_persons
    return np.stack(vols)


@pytest.mark.parametrize("mode", ["joint", "limb"])
def test_render_store_matches_direct_rendering(small_store, tmp_path, mode):
    out = tmp_path / "vol.h5"
    res = render_store(small_store, out, mode=mode, size=(20, 24), clip_len=8, num_clips=2,
                       split="test", progress=False)
    assert res == {"rendered": 15, "skipped": 0, "total": 15}
    store = PoseStore(small_store)
    with VolumeFile(out) as vf:
        assert vf.names() == store.split("test")
        assert vf.settings["shape"] == [2, 17, 8, 20, 24]
        assert vf.settings["mode"] == mode and vf.classes == ["a", "b", "c"]
        for name in vf.names():
            rec = store[name]
            assert vf.label(name) == rec.label
            np.testing.assert_allclose(vf[name], expected_volume(rec, (20, 24), 8, 2, mode),
                                       atol=1e-6)
        assert vf.summary()["complete"]


def test_resume_refuses_other_settings(small_store, tmp_path):
    out = tmp_path / "vol.h5"
    render_store(small_store, out, size=16, clip_len=4, split="test", progress=False)
    again = render_store(small_store, out, size=16, clip_len=4, split="test", progress=False)
    assert again == {"rendered": 0, "skipped": 15, "total": 15}
    with pytest.raises(StoreError, match="other settings.*clip_len"):
        render_store(small_store, out, size=16, clip_len=6, split="test", progress=False)
    render_store(small_store, out, size=16, clip_len=6, split="test", progress=False,
                 overwrite=True)


def test_uint8_and_float16_outputs(small_store, tmp_path):
    f32 = tmp_path / "f32.h5"
    render_store(small_store, f32, size=16, clip_len=6, progress=False)
    for dtype in ("uint8", "float16"):
        out = tmp_path / f"{dtype}.h5"
        render_store(small_store, out, size=16, clip_len=6, dtype=dtype, progress=False)
        with VolumeFile(out) as vf, VolumeFile(f32) as ref:
            assert vf[0].dtype == np.dtype(dtype)
            want = ref[3]
            want = np.floor(want * 255 + 0.5).astype(np.uint8) if dtype == "uint8" \
                else want.astype(np.float16)
            np.testing.assert_array_equal(vf[3], want)


def test_cuda_without_gpu_is_one_clear_line(small_store, tmp_path):
    res = CliRunner().invoke(main, ["render", str(small_store), "--render-device", "cuda",
                                    "--out", str(tmp_path / "v.h5"), "-q"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "cuda" in lines[0].lower()
    assert not (tmp_path / "v.h5").exists()


def test_old_device_spelling_still_works_with_a_deprecation_line(small_store, tmp_path):
    res = CliRunner().invoke(main, ["render", str(small_store), "--device", "cpu", "--size",
                                    "16", "--clip-len", "4", "--out", str(tmp_path / "v.h5"),
                                    "-q"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("heatvol: warning: heatvol render --device is deprecated")
    assert "--render-device" in lines[0] and "rendered" in lines[1]


def test_render_3d_store_is_refused(tmp_path):
    path = tmp_path / "p3.h5"
    with PoseWriter(path, layout="kinect20", dims=3) as w:
        w.append("a", np.zeros((1, 3, 20, 3)))
    with pytest.raises(StoreError, match="3D keypoints"):
        render_store(path, tmp_path / "v.h5", progress=False)


def test_killed_render_resumes_without_redoing(small_store, tmp_path):
    """kill -9 in the middle; the second run renders exactly the rest; nothing lost or doubled."""
    out = tmp_path / "vol.h5"
    code = ("from heatvol.render import render_store;"
            f"render_store({str(small_store)!r}, {str(out)!r}, size=64, clip_len=48, num_clips=3,"
            " mode='limb', progress=False, commit_every=4)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    parts = tmp_path / "vol.h5.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.h5"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(VolumeFile(out).names())
    assert 0 < done_before < 40, "kill the run in the middle"
    res = render_store(small_store, out, size=64, clip_len=48, num_clips=3, mode="limb",
                       progress=False)
    assert res["skipped"] == done_before and res["rendered"] == 40 - done_before
    store = PoseStore(small_store)
    with VolumeFile(out) as vf:
        assert sorted(vf.names()) == sorted(store.names())
        for name in ("q00", "q07", "q39"):
            np.testing.assert_allclose(vf[name], expected_volume(store[name], (64, 64), 48, 3,
                                                                 "limb"), atol=1e-6)
    assert not parts.exists()


def test_cli_render_defaults_in_a_folder_with_poses(small_store, tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = CliRunner().invoke(main, ["render", "--limb", "--size", "24", "--clip-len", "8", "-q"])
        assert res.exit_code == 0, res.output
        assert "rendered 40 samples" in res.output
        with VolumeFile("volumes.h5") as vf:
            assert vf.settings["shape"] == [1, 17, 8, 24, 24] and vf.settings["mode"] == "limb"
        res = CliRunner().invoke(main, ["render", "--size", "24", "16", "--clip-len", "8", "-q",
                                        "--out", "v2.h5", "--split", "train"])
        assert res.exit_code == 0, res.output
        with VolumeFile("v2.h5") as vf:
            assert vf.settings["shape"] == [1, 17, 8, 24, 16] and len(vf) == 25
        info = CliRunner().invoke(main, ["info", "v2.h5"])
        assert info.exit_code == 0 and "samples     25" in info.output
    finally:
        os.chdir(cwd)


def test_workers_give_the_same_file(small_store, tmp_path):
    render_store(small_store, tmp_path / "a.h5", size=16, clip_len=6, progress=False)
    render_store(small_store, tmp_path / "b.h5", size=16, clip_len=6, workers=2, progress=False)
    with VolumeFile(tmp_path / "a.h5") as a, VolumeFile(tmp_path / "b.h5") as b:
        assert a.names() == b.names()
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i], b[i])


def test_show_pictures(small_store, tmp_path):
    from PIL import Image
    runner = CliRunner()
    for args, out in ((["q04"], "skel.png"), (["q04", "--volume", "--limb"], "vol.gif"),
                      (["q05", "--volume", "--frames", "4"], "vol.png")):
        res = runner.invoke(main, ["show", str(small_store), *args, "--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        img = np.asarray(Image.open(tmp_path / out).convert("RGB"))
        assert img.std() > 5, "the picture is not blank"
    res = runner.invoke(main, ["show", str(small_store), "nope", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "no sequence named 'nope'" in res.output


def test_penn_action_test_split(tmp_path):
    """Real data: every Penn Action test sequence rendered with the right shape and label."""
    penn = shared_data("penn_action")
    from heatvol.importers import import_dataset
    store_path = tmp_path / "penn.h5"
    import_dataset("penn-action", penn, store_path, progress=False)
    out = tmp_path / "penn_vol.h5"
    res = render_store(store_path, out, split="test", size=32, clip_len=16, mode="limb",
                       dtype="uint8", workers=2, progress=False)
    assert res["total"] == 1068
    store = PoseStore(store_path)
    with VolumeFile(out) as vf:
        assert len(vf) == 1068 and set(vf.names()) == set(store.split("test"))
        assert vf[0].shape == (1, 13, 16, 32, 32)
        assert all(vf.label(n) == store[n].label for n in vf.names()[:50])
        assert vf[0].max() > 200, "a real pose renders peaks near 255"
