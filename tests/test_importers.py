"""Dataset importers (heatvol.importers): real Penn Action / NW-UCLA data, and small files
written here for pyskl, NTU RGB+D, Kinetics-skeleton and broken input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from heatvol import PoseStore, PoseWriter
from heatvol.importers import FORMATS, ImportFailed, ImportReport, export_pyskl, import_dataset

from conftest import shared_data as _real


def _records(store_path) -> dict:
    with PoseStore(store_path) as store:
        return {rec.name: rec for rec in store}


def test_formats_are_the_cli_names():
    assert list(FORMATS) == ["penn-action", "nw-ucla", "pyskl", "ntu", "kinetics-skeleton"]
    assert all(isinstance(v, str) and "\n" not in v for v in FORMATS.values())


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def penn_import(tmp_path_factory):
    src = _real("penn_action")
    out = tmp_path_factory.mktemp("penn") / "penn.h5"
    start = time.perf_counter()
    report = import_dataset("penn-action", src, out, progress=False)
    return src, out, report, time.perf_counter() - start


@pytest.fixture(scope="module")
def ucla_import(tmp_path_factory):
    src = _real("nw_ucla")
    out = tmp_path_factory.mktemp("ucla") / "ucla.h5"
    report = import_dataset("nw-ucla", src, out, progress=False)
    return src, out, report


def test_penn_action_real(penn_import):
    src, out, report, seconds = penn_import
    print(f"penn-action import: {seconds:.1f} s for {report.imported} files")
    assert seconds < 30
    assert report.problems == [] and report.imported == 2326 and report.skipped_existing == 0
    with PoseStore(out) as store:
        assert len(store) == 2326
        assert store.layout.name == "penn13" and store.dims == 2
        assert store.classes == sorted(store.classes) and len(store.classes) == 15
        assert {k: len(v) for k, v in store.splits.items()} == {"train": 1258, "test": 1068}
        assert store.check() == []
        frames = dict(zip(store.names(), store.num_frames))
        train = set(store.split("train"))
        files = sorted(src.glob("*.mat"))
        for i, path in enumerate(files):
            mat = scipy.io.loadmat(str(path))
            assert frames[path.stem] == mat["x"].shape[0], path
            if i % 37 and path is not files[-1]:
                continue  # full comparison for a sample of 64 files (and the last)
            rec = store[path.stem]
            expected = np.stack((mat["x"], mat["y"]), -1).astype(np.float32)[None]
            assert rec.keypoints.dtype == np.float32
            np.testing.assert_array_equal(rec.keypoints, expected)
            np.testing.assert_array_equal(rec.scores, mat["visibility"][None].astype(np.float32))
            assert store.classes[rec.label] == mat["action"][0]
            assert rec.img_shape == tuple(int(v) for v in mat["dimensions"][0, :2])
            assert (path.stem in train) == (int(mat["train"][0, 0]) == 1)
            assert rec.fps == 30 and rec.num_persons == 1


def test_penn_action_resume_skips_everything(penn_import):
    src, out, _, _ = penn_import
    report = import_dataset("penn-action", src, out, progress=False)
    assert (report.imported, report.skipped_existing, report.problems) == (0, 2326, [])
    with PoseStore(out) as store:
        assert {k: len(v) for k, v in store.splits.items()} == {"train": 1258, "test": 1068}


def test_nw_ucla_real(ucla_import):
    src, out, report = ucla_import
    assert report.problems == [] and report.imported == 1484
    with PoseStore(out) as store:
        assert len(store) == 1484 and store.layout.name == "kinect20" and store.dims == 3
        assert store.classes[:2] == ["pick up with one hand", "pick up with two hands"]
        assert len(store.classes) == 10 and store.classes[-1] == "carry"
        assert {k: len(v) for k, v in store.splits.items()} == {"train": 1020, "test": 464}
        assert set(store.split("test")) == {p.stem for p in src.glob("*_v03.json")}
        assert store.check() == []
        action_ids = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]
        for path in sorted(src.glob("*.json")):
            doc = json.loads(path.read_text())
            rec = store[path.stem]
            joints = np.asarray(doc["skeletons"], np.float64).astype(np.float32)
            np.testing.assert_array_equal(rec.keypoints, joints[None])
            present = (joints != 0).any(-1)[None].astype(np.float32)
            np.testing.assert_array_equal(rec.scores, present)
            assert action_ids[rec.label] == int(path.stem[1:3])
            assert doc["label"] == rec.label + 1  # the JSON label is 1-based
            assert rec.img_shape is None and rec.fps == 30


# --------------------------------------------------------------------------- pyskl

# What an outside user would write: numpy and pickle only, run as its own script.
OUTSIDE_SCRIPT = r'''
import pickle, sys
import numpy as np

rng = np.random.default_rng(7)
annotations = []
for i, m in enumerate([1, 0, 3, 2, 1]):
    t = 5 + i
    annotations.append({
        "frame_dir": f"clip{i}", "label": i % 3, "img_shape": (480, 640),
        "original_shape": (480, 640), "total_frames": t,
        "keypoint": (rng.random((m, t, 17, 2)) * 600).astype(np.float32),
        "keypoint_score": rng.random((m, t, 17)).astype(np.float32),
    })
split = {"train": ["clip0", "clip1", "clip2"], "val": ["clip3", "clip4"]}
with open(sys.argv[1], "wb") as f:
    pickle.dump({"split": split, "annotations": annotations}, f)

annotations = []
for i, m in enumerate([2, 1, 0]):
    t = 4 + i
    kp = rng.normal(size=(m, t, 25, 3)).astype(np.float32)
    if m == 2:
        kp[1, 2:] = 0  # the second body leaves: pyskl pads with zeros
    annotations.append({"frame_dir": f"S001C001P001R001A00{i + 1}", "label": i,
                        "total_frames": t, "keypoint": kp})
with open(sys.argv[2], "wb") as f:
    pickle.dump({"split": {"xsub_train": ["S001C001P001R001A001"],
                           "xsub_val": ["S001C001P001R001A002", "S001C001P001R001A003"]},
                 "annotations": annotations}, f)
'''


@pytest.fixture(scope="module")
def outside_pickles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyskl")
    script = folder / "make_pickles.py"
    script.write_text(OUTSIDE_SCRIPT)
    p2d, p3d = folder / "two_d.pkl", folder / "three_d.pkl"
    subprocess.run([sys.executable, str(script), str(p2d), str(p3d)], check=True)
    return p2d, p3d


def _assert_matches_pickle(store_path, pickle_path):
    with open(pickle_path, "rb") as f:
        data = pickle.load(f)
    recs = _records(store_path)
    assert list(recs) == [a["frame_dir"] for a in data["annotations"]]
    for ann in data["annotations"]:
        rec = recs[ann["frame_dir"]]
        assert rec.keypoints.dtype == np.float32 and rec.scores.dtype == np.float32
        np.testing.assert_array_equal(rec.keypoints, ann["keypoint"])
        if "keypoint_score" in ann:
            np.testing.assert_array_equal(rec.scores, ann["keypoint_score"])
        else:  # 3D: zero padding is missing, the rest present
            np.testing.assert_array_equal(rec.scores, (ann["keypoint"] != 0).any(-1))
        assert rec.label == ann["label"]
        assert rec.img_shape == (tuple(ann["img_shape"]) if "img_shape" in ann else None)
    with PoseStore(store_path) as store:
        assert store.splits == data["split"]
        assert store.check() == []
    return data


def test_pyskl_import_outside_pickles(outside_pickles, tmp_path):
    p2d, p3d = outside_pickles
    report = import_dataset("pyskl", p2d, tmp_path / "a.h5", progress=False)
    assert (report.imported, report.problems) == (5, [])
    _assert_matches_pickle(tmp_path / "a.h5", p2d)
    with PoseStore(tmp_path / "a.h5") as store:
        assert store.layout.name == "coco17" and store.dims == 2
        assert store.classes == ["class_0", "class_1", "class_2"]
        assert list(store.num_persons) == [1, 0, 3, 2, 1]

    report = import_dataset("pyskl", p3d, tmp_path / "b.h5", progress=False)
    assert (report.imported, report.problems) == (3, [])
    _assert_matches_pickle(tmp_path / "b.h5", p3d)
    with PoseStore(tmp_path / "b.h5") as store:
        assert store.layout.name == "ntu25" and store.dims == 3
        assert store["S001C001P001R001A001"].scores[1, 2:].sum() == 0


def test_pyskl_layout_override(outside_pickles, tmp_path):
    p2d, _ = outside_pickles
    with pytest.raises(ValueError, match="joints"):
        import_dataset("pyskl", p2d, tmp_path / "x.h5", progress=False, layout="openpose18")
    # A 17-joint layout other than the inferred one is accepted as given.
    import_dataset("pyskl", p2d, tmp_path / "y.h5", progress=False, layout="coco17")


def test_pyskl_export_round_trip_is_exact(outside_pickles, tmp_path):
    for i, src in enumerate(outside_pickles):
        first, again = tmp_path / f"first{i}.h5", tmp_path / f"again{i}.h5"
        import_dataset("pyskl", src, first, progress=False)
        exported = tmp_path / f"exported{i}.pkl"
        assert export_pyskl(first, exported) == len(_records(first))
        raw = exported.read_bytes()
        assert b"numpy._core" not in raw and b"numpy.core" not in raw  # NumPy 1.x loads it too
        data = pickle.loads(raw)
        for ann in data["annotations"]:
            kp = ann["keypoint"]
            assert kp.flags.writeable
            assert kp.dtype == np.float32 and kp.shape[1] == ann["total_frames"]
            if kp.shape[-1] == 2:
                assert ann["keypoint_score"].dtype == np.float32
                assert ann["img_shape"] == ann["original_shape"] == (480, 640)
            else:
                assert "keypoint_score" not in ann and "img_shape" not in ann
        import_dataset("pyskl", exported, again, progress=False)
        _assert_same_stores(first, again)


def _assert_same_stores(a, b, *, compare_fps=False):
    with PoseStore(a) as sa, PoseStore(b) as sb:
        assert sa.names() == sb.names()
        assert sa.splits == sb.splits and sa.classes == sb.classes
        assert (sa.layout.name, sa.dims) == (sb.layout.name, sb.dims)
        for ra, rb in zip(sa, sb):
            np.testing.assert_array_equal(ra.keypoints, rb.keypoints)
            np.testing.assert_array_equal(ra.scores, rb.scores)
            assert (ra.label, ra.img_shape) == (rb.label, rb.img_shape)
            if compare_fps:
                assert ra.fps == rb.fps


def test_pyskl_compressed_kinetics_form(tmp_path):
    rng = np.random.default_rng(3)
    v = 17
    # Frames 0, 0, 2, 5, 5, 5 (frames 1, 3, 4 have nobody): squeezed to T = 3, M = 3.
    frame_inds = np.array([0, 0, 2, 5, 5, 5])
    poses = rng.random((6, v, 3)).astype(np.float16)
    # A frame with 12 poses: ranked by summed score, the best 10 kept.
    crowd = rng.random((12, v, 3)).astype(np.float16)
    crowd_inds = np.full(12, 3)
    pkl = tmp_path / "k400.pkl"
    annotations = [
        {"frame_dir": "small", "label": 4, "img_shape": (360, 480), "original_shape": (360, 480),
         "total_frames": 6, "keypoint": poses, "frame_inds": frame_inds,
         "box_score": np.ones(6, np.float16)},
        {"frame_dir": "crowd", "label": 1, "img_shape": (360, 480), "original_shape": (360, 480),
         "total_frames": 4, "keypoint": np.concatenate([poses[:1], crowd]),
         "frame_inds": np.concatenate([[0], crowd_inds]), "box_score": np.ones(13, np.float16)},
        {"frame_dir": "selected", "label": 0, "img_shape": (360, 480), "total_frames": 6,
         "keypoint": poses, "frame_inds": frame_inds, "anno_inds": np.array([0, 2, 3])},
    ]
    with open(pkl, "wb") as f:
        pickle.dump({"split": {"train": ["small", "crowd"], "val": ["selected"]},
                     "annotations": annotations}, f)
    report = import_dataset("pyskl", pkl, tmp_path / "k.h5", progress=False)
    assert (report.imported, report.problems) == (3, [])
    recs = _records(tmp_path / "k.h5")

    small = recs["small"]
    assert small.keypoints.shape == (3, 3, v, 2)
    expected_kp = np.zeros((3, 3, v, 2), np.float32)
    expected_sc = np.zeros((3, 3, v), np.float32)
    for pose, (slot, t) in zip(poses, [(0, 0), (1, 0), (0, 1), (0, 2), (1, 2), (2, 2)]):
        expected_kp[slot, t] = pose[:, :2]
        expected_sc[slot, t] = pose[:, 2]
    np.testing.assert_array_equal(small.keypoints, expected_kp)
    np.testing.assert_array_equal(small.scores, expected_sc)

    crowd_rec = recs["crowd"]
    assert crowd_rec.keypoints.shape == (10, 2, v, 2)
    best = np.argsort(-crowd[..., 2].sum(-1, dtype=np.float16).astype(np.float64),
                      kind="stable")[:10]
    np.testing.assert_array_equal(crowd_rec.scores[:, 1], crowd[best, :, 2])
    np.testing.assert_array_equal(crowd_rec.keypoints[0, 0], poses[0, :, :2])

    selected = recs["selected"]  # poses 0, 2, 3 -> frames 0, 2, 5: one person each
    np.testing.assert_array_equal(selected.keypoints[0], poses[[0, 2, 3], :, :2])


def _pyskl_decompress_pose(keypoint, frame_inds, max_person=10):
    """pyskl's DecompressPose(squeeze=True, max_person=10), transcribed (float16 output)."""
    uni = np.unique(frame_inds)
    map_ = {x: i for i, x in enumerate(uni)}
    frame_inds = np.array([map_[x] for x in frame_inds])
    total_frames = frame_inds.max() + 1
    num_person = np.bincount(frame_inds).max()
    num_joints = keypoint.shape[1]
    new_kp = np.zeros([num_person, total_frames, num_joints, 2], dtype=np.float16)
    new_kpscore = np.zeros([num_person, total_frames, num_joints], dtype=np.float16)
    nperson_per_frame = np.zeros([total_frames], dtype=np.int16)
    for frame_ind, kp in zip(frame_inds, keypoint):
        person_ind = nperson_per_frame[frame_ind]
        new_kp[person_ind, frame_ind] = kp[:, :2]
        new_kpscore[person_ind, frame_ind] = kp[:, 2]
        nperson_per_frame[frame_ind] += 1
    if num_person > max_person:
        for i in range(total_frames):
            nperson = nperson_per_frame[i]
            score_sum = new_kpscore[:nperson, i].sum(-1)
            inds = sorted(range(nperson), key=lambda x: -score_sum[x])
            new_kpscore[:nperson, i] = new_kpscore[inds, i]
            new_kp[:nperson, i] = new_kp[inds, i]
        num_person = max_person
    return new_kp[:num_person], new_kpscore[:num_person]


@settings(max_examples=40, deadline=None)
@given(persons_per_frame=st.lists(st.integers(1, 13), min_size=1, max_size=6),
       gaps=st.lists(st.integers(0, 3), min_size=6, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_decompress_matches_pyskl(persons_per_frame, gaps, seed):
    from heatvol.importers.pyskl import decompress

    rng = np.random.default_rng(seed)
    frames = np.cumsum([g + 1 for g in gaps[:len(persons_per_frame)]])
    frame_inds = np.repeat(frames, persons_per_frame)
    poses = rng.random((len(frame_inds), 5, 3)).astype(np.float16)
    # Scores in steps of 1/8: sums are exact, so the ranking cannot hinge on rounding.
    poses[..., 2] = rng.integers(0, 9, poses.shape[:2]) / 8
    keypoints, scores = decompress({"keypoint": poses, "frame_inds": frame_inds}, 5)
    expected_kp, expected_sc = _pyskl_decompress_pose(poses, frame_inds)
    np.testing.assert_array_equal(keypoints, expected_kp.astype(np.float32))
    np.testing.assert_array_equal(scores, expected_sc.astype(np.float32))


def test_pyskl_bad_scores_are_a_problem(tmp_path):
    ann = {"frame_dir": "ok", "label": 0, "img_shape": (10, 10), "total_frames": 2,
           "keypoint": np.zeros((1, 2, 17, 2), np.float32),
           "keypoint_score": np.full((1, 2, 17), 0.5, np.float32)}
    bad = dict(ann, frame_dir="too_confident", keypoint_score=np.full((1, 2, 17), 1.5, np.float32))
    pkl = tmp_path / "bad.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"split": {"train": ["ok", "too_confident"]}, "annotations": [ann, bad]}, f)
    seen = []
    report = import_dataset("pyskl", pkl, tmp_path / "s.h5", progress=False, on_problem=seen.append)
    assert report.imported == 1 and len(report.problems) == 1 and seen == report.problems
    assert "too_confident" in report.problems[0] and "[0, 1]" in report.problems[0]
    with PoseStore(tmp_path / "s.h5") as store:
        assert store.splits == {"train": ["ok"]} and store.check() == []
        assert "too_confident" in store.failures


# --------------------------------------------------------------------------- NTU RGB+D


def write_skeleton(path: Path, frames) -> None:
    """frames: per frame a list of (body_id, xyz [25, 3]); the other fields are filler."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, xyz in bodies:
            lines.append(f"{body_id} 0 1 2 1 2 0 0.1 -0.2 2")
            lines.append("25")
            for x, y, z in np.asarray(xyz).tolist():
                lines.append(f"{x!r} {y!r} {z!r} 250.1 200.2 960.5 540.5 0.1 0.2 0.3 0.4 2")
    path.write_text("\n".join(lines) + "\n")


def _body(rng, moving: float) -> np.ndarray:
    return (rng.normal(size=(25, 3)) * moving + np.array([0.0, 0.0, 3.0])).round(6)


@pytest.fixture
def ntu_folder(tmp_path):
    rng = np.random.default_rng(11)
    folder = tmp_path / "ntu"
    folder.mkdir()
    still, lively, medium = "72057594037931101", "72057594037931102", "72057594037931103"
    # Two bodies, 3 frames.
    two = [[(still, _body(rng, 0.01)), (lively, _body(rng, 1.0))] for _ in range(3)]
    write_skeleton(folder / "S001C002P001R001A001.skeleton", two)
    # Three bodies and a frame without anybody (frame 2); "still" barely moves.
    three = [[(still, _body(rng, 0.01)), (medium, _body(rng, 0.3))],
             [(lively, _body(rng, 1.0)), (still, _body(rng, 0.01)), (medium, _body(rng, 0.3))],
             [],
             [(lively, _body(rng, 1.0)), (medium, _body(rng, 0.3))]]
    write_skeleton(folder / "S002C001P003R002A013.skeleton", three)
    write_skeleton(folder / "S001C003P002R001A060.skeleton", [[], []])  # nobody at all
    return folder, {"two": two, "three": three}


def _expected_track(frames, body_id, num_frames):
    kp = np.zeros((num_frames, 25, 3), np.float32)
    for t, bodies in enumerate(frames):
        for bid, xyz in bodies:
            if bid == body_id:
                kp[t] = xyz
    return kp


def test_ntu_bodies_by_energy_and_splits(ntu_folder, tmp_path):
    folder, frames = ntu_folder
    report = import_dataset("ntu", folder, tmp_path / "ntu.h5", progress=False)
    assert (report.imported, report.problems) == (3, [])
    with PoseStore(tmp_path / "ntu.h5") as store:
        assert store.layout.name == "ntu25" and store.dims == 3 and store.check() == []
        assert store.classes == [f"A{a:03d}" for a in range(1, 61)]
        assert set(store.splits) == {"xsub_train", "xsub_val", "xview_train", "xview_val"}
        assert sorted(store.split("xsub_train")) == ["S001C002P001R001A001",
                                                     "S001C003P002R001A060"]
        assert store.split("xsub_val") == ["S002C001P003R002A013"]
        assert sorted(store.split("xview_train")) == ["S001C002P001R001A001",
                                                      "S001C003P002R001A060"]

        two = store["S001C002P001R001A001"]
        assert two.label == 0 and two.keypoints.shape == (2, 3, 25, 3)
        # The lively body first (more energy), then the still one.
        np.testing.assert_array_equal(two.keypoints[0],
                                      _expected_track(frames["two"], "72057594037931102", 3))
        np.testing.assert_array_equal(two.keypoints[1],
                                      _expected_track(frames["two"], "72057594037931101", 3))
        assert two.scores.min() == 1

        three = store["S002C001P003R002A013"]
        assert three.label == 12 and three.keypoints.shape == (2, 4, 25, 3)
        lively = _expected_track(frames["three"], "72057594037931102", 4)
        medium = _expected_track(frames["three"], "72057594037931103", 4)
        np.testing.assert_array_equal(three.keypoints[0], lively)
        np.testing.assert_array_equal(three.keypoints[1], medium)
        np.testing.assert_array_equal(three.scores[0].max(-1), [0, 1, 0, 1])
        np.testing.assert_array_equal(three.scores[1].max(-1), [1, 1, 0, 1])
        assert not three.keypoints[:, 2].any()

        nobody = store["S001C003P002R001A060"]
        assert nobody.num_persons == 0 and nobody.num_frames == 2 and nobody.label == 59


def test_ntu120_files_add_xset_and_120_classes(ntu_folder, tmp_path):
    folder, frames = ntu_folder
    write_skeleton(folder / "S018C001P045R001A061.skeleton", frames["two"])
    import_dataset("ntu", folder, tmp_path / "ntu120.h5", progress=False)
    with PoseStore(tmp_path / "ntu120.h5") as store:
        assert len(store.classes) == 120 and store.classes[-1] == "A120"
        assert store.split("xset_train") == ["S002C001P003R002A013", "S018C001P045R001A061"]
        assert "S018C001P045R001A061" in store.split("xsub_train")  # subject 45 trains in NTU120
        assert store["S018C001P045R001A061"].label == 60


def test_ntu_store_exports_to_pyskl_exactly(ntu_folder, tmp_path):
    folder, _ = ntu_folder
    import_dataset("ntu", folder, tmp_path / "ntu.h5", progress=False)
    assert export_pyskl(tmp_path / "ntu.h5", tmp_path / "ntu.pkl") == 3
    import_dataset("pyskl", tmp_path / "ntu.pkl", tmp_path / "back.h5", progress=False)
    _assert_same_stores(tmp_path / "ntu.h5", tmp_path / "back.h5")


def test_ntu_garbage_file_is_one_problem(ntu_folder, tmp_path):
    folder, _ = ntu_folder
    (folder / "S001C001P001R001A002.skeleton").write_text("3\n1\nthis is not a body\n")
    (folder / "notes.skeleton").write_text("1\n0\n")
    report = import_dataset("ntu", folder, tmp_path / "ntu.h5", progress=False)
    assert report.imported == 3 and len(report.problems) == 2
    assert any("S001C001P001R001A002.skeleton: " in p and "body record" in p
               for p in report.problems)
    assert any("notes.skeleton: " in p for p in report.problems)


# --------------------------------------------------------------------------- Kinetics-skeleton


def _kinetics_video(frames: dict[int, list[tuple[list[float], list[float]]]], label, index):
    return {"data": [{"frame_index": fi, "skeleton": [{"pose": p, "score": s} for p, s in people]}
                     for fi, people in frames.items()],
            "label": label, "label_index": index}


def test_kinetics_skeleton(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "kinetics"
    (src / "kinetics_train").mkdir(parents=True)
    (src / "kinetics_val").mkdir()

    def person(conf):
        pose = rng.random(36).round(3).tolist()
        score = np.full(18, conf).round(3).tolist()
        score[4] = 0.0  # right wrist not found
        return pose, score

    weak, strong, middle = person(0.2), person(0.9), person(0.5)
    alone = person(0.7)
    video_a = _kinetics_video({1: [alone], 2: [weak, strong, middle], 4: [alone]}, "jump", 5)
    video_b = _kinetics_video({1: [alone], 2: [alone]}, "run", 2)
    (src / "kinetics_train" / "vid_a.json").write_text(json.dumps(video_a))
    (src / "kinetics_val" / "vid_b.json").write_text(json.dumps(video_b))

    report = import_dataset("kinetics-skeleton", src, tmp_path / "k.h5", progress=False)
    assert (report.imported, report.problems) == (2, [])
    with PoseStore(tmp_path / "k.h5") as store:
        assert store.layout.name == "openpose18" and store.check() == []
        assert store.classes == ["class_0", "class_1", "run", "class_3", "class_4", "jump"]
        assert store.splits == {"train": ["vid_a"], "val": ["vid_b"]}
        a = store["vid_a"]
        assert a.label == 5 and a.img_shape == (256, 340) and a.fps == 30
        assert a.keypoints.shape == (2, 4, 18, 2)  # T = last frame_index, M = 2 of 3

        def pixels(p):
            xy = np.asarray(p[0], np.float64).reshape(18, 2) * (340, 256)
            xy[np.asarray(p[1]) == 0] = 0
            return xy.astype(np.float32)

        np.testing.assert_array_equal(a.keypoints[0, 1], pixels(strong))
        np.testing.assert_array_equal(a.keypoints[1, 1], pixels(middle))
        np.testing.assert_array_equal(a.keypoints[0, 0], pixels(alone))
        np.testing.assert_array_equal(a.scores[0, 1], np.asarray(strong[1], np.float32))
        assert a.keypoints[0, 1, 4].tolist() == [0, 0] and a.scores[0, 1, 4] == 0
        assert not a.scores[:, 2].any() and not a.scores[1, 0].any()  # frame 3 missing
        assert store["vid_b"].keypoints.shape == (1, 2, 18, 2)


def test_kinetics_flat_folder_and_class_conflict(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    pose, score = [0.5] * 36, [0.8] * 18
    (src / "a.json").write_text(json.dumps(_kinetics_video({1: [(pose, score)]}, "run", 1)))
    (src / "b.json").write_text(json.dumps(_kinetics_video({1: [(pose, score)]}, "walk", 1)))
    (src / "c.json").write_text(json.dumps(_kinetics_video({}, "run", 1)))  # no skeleton
    report = import_dataset("kinetics-skeleton", src, tmp_path / "k.h5", progress=False)
    assert report.imported == 1 and len(report.problems) == 2
    assert report.problems[0].startswith(f"{src / 'b.json'}: label index 1 is named 'walk'")
    assert report.problems[1].startswith(f"{src / 'c.json'}: no frames")
    with PoseStore(tmp_path / "k.h5") as store:
        assert store.splits == {} and store.classes == ["class_0", "run"]


# --------------------------------------------------------------------------- bad input, resume


def write_penn_mat(path: Path, rng, *, frames=6, action="squat", train=1, y_frames=None):
    x = rng.random((frames, 13)) * 400
    y = rng.random((y_frames or frames, 13)) * 300
    vis = (rng.random((frames, 13)) > 0.3).astype(np.uint8)
    scipy.io.savemat(str(path), {
        "action": action, "pose": "front", "x": x, "y": y, "visibility": vis,
        "train": np.array([[train]], np.int32), "bbox": np.zeros((frames, 4)),
        "dimensions": np.array([[360, 480, frames]], np.uint16),
        "nframes": np.array([[frames % 256]], np.uint8)})


@pytest.fixture
def penn_folder(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "penn"
    folder.mkdir()
    for i in range(1, 7):
        write_penn_mat(folder / f"{i:04d}.mat", rng, frames=3 + i, train=1 if i % 2 else -1,
                       action="squat" if i < 4 else "bowl")
    (folder / "0004.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" + bytes(100))  # corrupt
    return folder


def test_penn_bad_file_is_reported_and_skipped(penn_folder, tmp_path):
    seen = []
    report = import_dataset("penn-action", penn_folder, tmp_path / "p.h5", progress=False,
                            on_problem=seen.append)
    assert isinstance(report, ImportReport)
    assert report.imported == 5 and len(report.problems) == 1 and seen == report.problems
    assert report.problems[0].startswith(f"{penn_folder / '0004.mat'}: ")
    assert "\n" not in report.problems[0]
    with PoseStore(tmp_path / "p.h5") as store:
        assert sorted(store.names()) == ["0001", "0002", "0003", "0005", "0006"]
        assert store.splits == {"train": ["0001", "0003", "0005"], "test": ["0002", "0006"]}
        assert store.check() == [] and "0004" in store.failures


def test_penn_frame_count_disagreement_is_a_problem(tmp_path):
    folder = tmp_path / "penn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_penn_mat(folder / "0001.mat", rng)
    write_penn_mat(folder / "0002.mat", rng, frames=5, y_frames=4)
    report = import_dataset("penn-action", folder, tmp_path / "p.h5", progress=False)
    assert report.imported == 1
    assert report.problems == [f"{folder / '0002.mat'}: x, y and visibility disagree on the "
                               f"frame count (5, 4, 5)"]


def test_strict_stops_at_first_bad_file_and_keeps_the_rest(penn_folder, tmp_path):
    out = tmp_path / "p.h5"
    with pytest.raises(ImportFailed) as failed:
        import_dataset("penn-action", penn_folder, out, progress=False, strict=True)
    message = str(failed.value)
    assert message.startswith(f"{penn_folder / '0004.mat'}: ") and "\n" not in message
    with PoseStore(out) as store:  # what came before the bad file is in the store
        assert sorted(store.names()) == ["0001", "0002", "0003"]
        assert store.splits == {"train": ["0001", "0003"], "test": ["0002"]}
        assert store.check() == []

    # Resume: fix the file, re-run; the three imported ones are skipped.
    write_penn_mat(penn_folder / "0004.mat", np.random.default_rng(9), train=-1)
    report = import_dataset("penn-action", penn_folder, out, progress=False, strict=True)
    assert (report.imported, report.skipped_existing, report.problems) == (3, 3, [])
    with PoseStore(out) as store:
        assert len(store) == 6 and store.check() == []
        assert store.splits == {"train": ["0001", "0003", "0005"],
                                "test": ["0002", "0004", "0006"]}

    # overwrite starts from an empty store.
    report = import_dataset("penn-action", penn_folder, out, progress=False, overwrite=True)
    assert (report.imported, report.skipped_existing) == (6, 0)


def test_resume_after_a_kill_recovers_splits_from_the_files(penn_folder, tmp_path):
    (penn_folder / "0004.mat").unlink()
    out = tmp_path / "p.h5"
    # A killed import: sequences committed, splits never written.
    with PoseWriter(out, layout="penn13") as writer:
        writer.append("0001", np.zeros((1, 4, 13, 2)), np.ones((1, 4, 13)), img_shape=(360, 480))
    report = import_dataset("penn-action", penn_folder, out, progress=False)
    assert (report.imported, report.skipped_existing, report.problems) == (4, 1, [])
    with PoseStore(out) as store:
        assert store.split("train") == ["0001", "0003", "0005"]


def test_nw_ucla_truncated_json_and_label_mismatch(tmp_path):
    folder = tmp_path / "ucla"
    folder.mkdir()
    rng = np.random.default_rng(4)

    def write(stem, label, frames=3):
        doc = {"file_name": stem, "skeletons": rng.normal(size=(frames, 20, 3)).round(5).tolist(),
               "label": label}
        (folder / f"{stem}.json").write_text(json.dumps(doc))

    write("a01_s01_e00_v01", 1)
    write("a12_s02_e01_v03", 10)
    write("a08_s01_e00_v02", 3)  # a08 (donning) is class 6: label field should be 7
    text = json.dumps({"file_name": "a02_s01_e00_v01", "skeletons": [[[0.1, 0.2, 3.0]] * 20],
                       "label": 2})
    (folder / "a02_s01_e00_v01.json").write_text(text[:40])  # truncated
    report = import_dataset("nw-ucla", folder, tmp_path / "u.h5", progress=False)
    assert report.imported == 2 and len(report.problems) == 2
    assert report.problems[0].startswith(f"{folder / 'a02_s01_e00_v01.json'}: JSONDecodeError")
    assert report.problems[1].startswith(f"{folder / 'a08_s01_e00_v02.json'}: label field 3")
    with PoseStore(tmp_path / "u.h5") as store:
        assert store.splits == {"train": ["a01_s01_e00_v01"], "test": ["a12_s02_e01_v03"]}
        assert store["a12_s02_e01_v03"].label == 9

    again = import_dataset("nw-ucla", folder, tmp_path / "u.h5", progress=False)
    assert (again.imported, again.skipped_existing, len(again.problems)) == (0, 2, 2)


def test_unreadable_sources_raise_import_failed(tmp_path):
    with pytest.raises(ImportFailed, match="no such folder"):
        import_dataset("penn-action", tmp_path / "missing", tmp_path / "x.h5", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFailed, match=r"no \*\.skeleton files"):
        import_dataset("ntu", tmp_path / "empty", tmp_path / "x.h5", progress=False)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ImportFailed, match="cannot unpickle"):
        import_dataset("pyskl", tmp_path / "junk.pkl", tmp_path / "x.h5", progress=False)
    with pytest.raises(ValueError, match="unknown import format"):
        import_dataset("mpii", tmp_path, tmp_path / "x.h5", progress=False)
