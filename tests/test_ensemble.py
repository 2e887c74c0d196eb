"""`heatvol ensemble` / heatvol.training.ensemble: score fusion of saved `heatvol test` results."""

import json
import shlex

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from heatvol.cli import main
from heatvol.metrics import compute_metrics
from heatvol.training import ConfigError, fuse_results, load_result

METRICS = ("num_samples", "top1", "top5", "mean_class", "per_class", "confusion")
FEW = settings(max_examples=25, deadline=None)


def make_result(rng, n=30, c=6, *, names=None, labels=None, model="msg3d", modality="joint"):
    """A result dict as `heatvol test --json` writes it, with random (Dirichlet) scores."""
    classes = [f"class_{i}" for i in range(c)]
    names = [f"seq_{i:03d}" for i in range(n)] if names is None else list(names)
    labels = rng.integers(0, c, n) if labels is None else np.asarray(labels)
    scores = rng.dirichlet(np.full(c, 0.7), n)
    res = compute_metrics(scores, labels, classes)
    res.update({"classes": classes, "names": names, "labels": [int(x) for x in labels],
                "scores": scores.tolist(), "model": model, "mode": "joint",
                "modality": modality, "checkpoint": "runs/x/best.pt", "split": "test",
                "num_clips": 10, "flip": True})
    return res


def streams(seed, count=4, n=30, c=6):
    rng = np.random.default_rng(seed)
    first = make_result(rng, n, c)
    out = [first]
    for k in range(1, count):
        out.append(make_result(rng, n, c, labels=first["labels"],
                               modality=["joint", "bone", "joint_motion", "bone_motion"][k % 4]))
    return out


def metrics(res):
    return {k: res[k] for k in METRICS}


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# --------------------------------------------------------------------------- fusion


@FEW
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), c=st.integers(2, 9),
       weight=st.sampled_from([1.0, 0.25, 3.0]))
def test_one_result_reproduces_its_metrics(seed, n, c, weight):
    (r,) = streams(seed, 1, n, c)
    assert np.ptp(np.asarray(r["scores"])) > 0
    fused = fuse_results([r], [weight])
    assert metrics(fused) == metrics(r)
    assert fused["streams"][0]["top1"] == r["top1"]
    assert fused["names"] == r["names"] and fused["labels"] == r["labels"]
    np.testing.assert_allclose(fused["scores"], weight * np.asarray(r["scores"]), rtol=1e-15)
    assert metrics(fuse_results([r])) == metrics(r)  # default weights: all 1


@FEW
@given(seed=st.integers(0, 2**32 - 1), exponent=st.integers(-6, 6))
def test_weights_are_scale_invariant(seed, exponent):
    rs = streams(seed, 4)
    a = fuse_results(rs, [2, 2, 1, 1])
    b = fuse_results(rs, [4, 4, 2, 2])
    c = fuse_results(rs, [2.0 * 2.0**exponent, 2.0 * 2.0**exponent, 2.0**exponent, 2.0**exponent])
    assert metrics(a) == metrics(b) == metrics(c)
    np.testing.assert_allclose(b["scores"], 2 * np.asarray(a["scores"]), rtol=1e-15)
    # the fused scores are the weighted sum of the probabilities
    expected = sum(w * np.asarray(r["scores"]) for w, r in zip([2, 2, 1, 1], rs))
    np.testing.assert_allclose(a["scores"], expected, rtol=1e-12)
    assert [s["weight"] for s in a["streams"]] == [2, 2, 1, 1] == a["weights"]
    assert [s["top1"] for s in a["streams"]] == [r["top1"] for r in rs]
    assert [s["modality"] for s in a["streams"]] == ["joint", "bone", "joint_motion",
                                                     "bone_motion"]


@FEW
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_samples_align_by_name(seed, data):
    rs = streams(seed, 3, n=25)
    perm = np.asarray(data.draw(st.permutations(range(25))))
    moved = dict(rs[1])
    moved["names"] = [rs[1]["names"][i] for i in perm]
    moved["labels"] = [rs[1]["labels"][i] for i in perm]
    moved["scores"] = [rs[1]["scores"][i] for i in perm]
    weights = [1, 2, 0.5]
    straight = fuse_results(rs, weights)
    shuffled = fuse_results([rs[0], moved, rs[2]], weights)
    assert metrics(shuffled) == metrics(straight)
    assert shuffled["streams"][1]["top1"] == straight["streams"][1]["top1"]
    np.testing.assert_allclose(shuffled["scores"], straight["scores"], rtol=1e-15)
    assert shuffled["names"] == rs[0]["names"]  # the first file's order
    if (perm != np.arange(25)).any():  # scores shuffled without their names would differ
        scrambled = dict(rs[1], scores=moved["scores"])
        wrong = fuse_results([rs[0], scrambled, rs[2]], weights)
        assert not np.allclose(wrong["scores"], straight["scores"])


def test_samples_align_when_the_first_file_is_shuffled():
    rs = streams(7, 2, n=12)
    perm = np.random.default_rng(1).permutation(12)
    moved = {k: ([rs[0][k][i] for i in perm] if k in ("names", "labels", "scores") else v)
             for k, v in rs[0].items()}
    a = fuse_results(rs, [2, 1])
    b = fuse_results([moved, rs[1]], [2, 1])
    assert metrics(a) == metrics(b)
    assert b["names"] == moved["names"]
    np.testing.assert_allclose(np.asarray(b["scores"]), np.asarray(a["scores"])[perm])


@FEW
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(3, 10), half=st.integers(3, 30))
def test_complementary_streams_beat_each(seed, c, half):
    """Stream A is right on the first half, B on the second; together they are right on all."""
    rng = np.random.default_rng(seed)
    n = 2 * half
    labels = rng.integers(0, c, n)
    classes = [f"c{i}" for i in range(c)]
    names = [f"v{i}" for i in range(n)]
    out = []
    for right in (np.arange(n) < half, np.arange(n) >= half):
        scores = np.empty((n, c))
        for i, y in enumerate(labels):
            p = rng.dirichlet(np.ones(c)) * 0.1  # noise: at most 0.1
            if right[i]:
                p[y] += 0.85  # right and sure
            else:
                wrong = (y + rng.integers(1, c)) % c
                p[wrong] += 0.45  # wrong, but not sure
                p[y] += 0.3
            scores[i] = p / p.sum()
        out.append({"classes": classes, "names": names, "labels": labels.tolist(),
                    "scores": scores.tolist()})
    a, b = (compute_metrics(r["scores"], labels, classes)["top1"] for r in out)
    assert a == b == 0.5
    fused = fuse_results(out, sources=["a.json", "b.json"])
    assert fused["top1"] == 1.0 > max(a, b)
    assert [s["top1"] for s in fused["streams"]] == [0.5, 0.5]
    assert [s["source"] for s in fused["streams"]] == ["a.json", "b.json"]
    assert fused["streams"][0]["model"] is None  # a setting the file lacks


# --------------------------------------------------------------------------- errors


def test_mismatched_classes_names_labels_and_weights():
    a, b = streams(3, 2, n=20, c=5)
    src = ["a.json", "b.json"]

    swapped = dict(b, classes=[b["classes"][1], b["classes"][0]] + b["classes"][2:])
    with pytest.raises(ConfigError) as e:
        fuse_results([a, swapped], sources=src)
    one_line_error(e, "b.json", "classes differ from a.json", "'class_1'")

    more = make_result(np.random.default_rng(0), 20, 6, labels=a["labels"])
    with pytest.raises(ConfigError) as e:
        fuse_results([a, more], sources=src)
    one_line_error(e, "b.json", "6 classes", "a.json has 5")

    renamed = dict(b, names=["x"] + b["names"][1:])
    with pytest.raises(ConfigError) as e:
        fuse_results([a, renamed], sources=src)
    one_line_error(e, "b.json: 1 sample(s) not in a.json (first: 'x')")

    fewer = dict(b, names=b["names"][:-3], labels=b["labels"][:-3], scores=b["scores"][:-3])
    with pytest.raises(ConfigError) as e:
        fuse_results([a, fewer], sources=src)
    one_line_error(e, "b.json: 3 sample(s) of a.json missing", repr(a["names"][-3]))
    with pytest.raises(ConfigError) as e:  # and the other way round
        fuse_results([fewer, a], sources=["b.json", "a.json"])
    one_line_error(e, "a.json: 3 sample(s) not in b.json")

    relabelled = dict(b, labels=list(b["labels"]))
    relabelled["labels"][4] = (relabelled["labels"][4] + 1) % 5
    with pytest.raises(ConfigError) as e:
        fuse_results([a, relabelled], sources=src)
    one_line_error(e, "b.json", "1 sample(s) with another label", repr(a["names"][4]))

    for weights, needle in (([1], "1 weight(s) for 2"), ([1, 2, 3], "3 weight(s) for 2"),
                            ([1, -1], "non-negative"), ([0, 0], "sum to 0"),
                            ([1, float("nan")], "finite")):
        with pytest.raises(ConfigError) as e:
            fuse_results([a, b], weights, sources=src)
        one_line_error(e, "--weights", needle)
    assert fuse_results([a, b], [0, 1])["top1"] == b["top1"]  # a zero weight is allowed

    with pytest.raises(ConfigError) as e:
        fuse_results([])
    one_line_error(e, "no results")
    with pytest.raises(ConfigError) as e:  # without sources: the index names the result
        fuse_results([a, renamed])
    one_line_error(e, "results[1]")


def test_load_result_errors_name_the_file(tmp_path):
    r = streams(5, 1, n=8, c=4)[0]
    good = write(tmp_path / "good.json", r)
    assert load_result(good)["scores"] == r["scores"]

    cases = [
        (tmp_path / "none.json", "no such file"),
        (tmp_path / "text.json", "not JSON"),
        (write(tmp_path / "string.json", "top-1 93 %"), "not a result object"),
        (tmp_path / "notjson.json", "not JSON"),
        (write(tmp_path / "list.json", [1, 2]), "not a result object"),
        (write(tmp_path / "old.json", {k: v for k, v in r.items() if k != "scores"}),
         "no 'scores' key"),
        (write(tmp_path / "nonames.json", {k: v for k, v in r.items()
                                           if k not in ("names", "labels")}),
         "no 'names', 'labels' keys"),
        (write(tmp_path / "shape.json", dict(r, scores=[row[:-1] for row in r["scores"]])),
         "scores have shape [8, 3], expected [8, 4]"),
        (write(tmp_path / "rows.json", dict(r, scores=r["scores"][:-1])), "shape [7, 4]"),
        (write(tmp_path / "ragged.json", dict(r, scores=[r["scores"][0][:2]] + r["scores"][1:])),
         "ragged"),
        (write(tmp_path / "label.json", dict(r, labels=[9] + r["labels"][1:])), "label 9"),
        (write(tmp_path / "dup.json", dict(r, names=[r["names"][1]] + r["names"][1:])),
         "more than once"),
        (tmp_path, "folder"),
    ]
    (tmp_path / "notjson.json").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "text.json").write_text("top-1 93 %\n")
    for path, needle in cases:
        with pytest.raises(ConfigError) as e:
            load_result(path)
        one_line_error(e, str(path), needle)
    with pytest.raises(ConfigError) as e:
        load_result(tmp_path / "old.json")
    one_line_error(e, "heatvol test --json")


# --------------------------------------------------------------------------- command line


@pytest.fixture
def four_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rs = streams(11, 4, n=40, c=7)
    for name, r in zip("abcd", rs):
        write(tmp_path / f"{name}.json", r)
    return rs


def test_cli_four_streams_weights_2_2_1_1(four_files):
    rs = four_files
    args = shlex.split("heatvol ensemble a.json b.json c.json d.json --weights 2 2 1 1")[1:]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    want = fuse_results(rs, [2, 2, 1, 1])
    for name, r, w in zip("abcd", rs, (2, 2, 1, 1)):
        row = next(line for line in res.output.splitlines() if f"{name}.json" in line)
        assert "msg3d" in row and r["modality"] in row and f"{r['top1']:.2%}" in row
        assert row.split()[-2] == str(w)
    assert (f"top-1 {want['top1']:.2%}   top-5 {want['top5']:.2%}   mean-class "
            f"{want['mean_class']:.2%}") in res.output
    assert "4 streams, 40 sequences" in res.output

    # --json: everything but the scores, with the weights in the files' order
    res = CliRunner().invoke(main, args + ["--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert "scores" not in got
    assert got["weights"] == [2, 2, 1, 1]
    assert metrics(got) == metrics(want)
    assert got["names"] == want["names"] and got["labels"] == want["labels"]
    assert [s["source"] for s in got["streams"]] == ["a.json", "b.json", "c.json", "d.json"]

    # the weights may also come first, comma-separated; the order of the files is what counts
    res = CliRunner().invoke(main, ["ensemble", "--weights", "2,2,1,1", "a.json", "b.json",
                                    "c.json", "d.json", "--json"])
    assert res.exit_code == 0, res.output
    assert metrics(json.loads(res.stdout)) == metrics(want)


def test_cli_out_can_be_loaded_and_fused_again(four_files, tmp_path):
    rs = four_files
    res = CliRunner().invoke(main, ["ensemble", "a.json", "b.json", "c.json", "d.json",
                                    "--weights", "2", "2", "1", "1", "--out", "out/fused.json",
                                    "--confusion", "out/fused.png"])
    assert res.exit_code == 0, res.output
    fused = load_result(tmp_path / "out" / "fused.json")
    want = fuse_results(rs, [2, 2, 1, 1])
    np.testing.assert_allclose(fused["scores"], want["scores"], rtol=0)
    assert metrics(fused) == metrics(want)
    assert (tmp_path / "out" / "fused.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # fused again, with one more stream: the same as fusing the scores by hand
    res = CliRunner().invoke(main, ["ensemble", "out/fused.json", "a.json", "--weights", "1",
                                    "3", "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    by_hand = np.asarray(want["scores"]) + 3 * np.asarray(rs[0]["scores"])
    assert metrics(again) == metrics(compute_metrics(by_hand, want["labels"], want["classes"]))
    assert again["streams"][0]["model"] == "ensemble"
    assert again["streams"][0]["top1"] == want["top1"]


def test_cli_errors_are_one_line(four_files, tmp_path):
    (tmp_path / "bad.json").write_text("{")
    rs = four_files
    write(tmp_path / "other.json", dict(rs[1], classes=rs[1]["classes"][::-1]))
    for args, needle in (
        (["a.json", "b.json", "--weights", "2", "2", "1"], "--weights: 3 weight(s) for 2"),
        (["a.json", "b.json", "c.json", "d.json", "--weights", "2", "2", "1"],
         "--weights: 3 weight(s) for 4"),
        (["a.json", "missing.json"], "missing.json: no such file"),
        (["a.json", "bad.json"], "bad.json: not JSON"),
        (["a.json", "other.json"], "other.json: classes differ from a.json"),
    ):
        res = CliRunner().invoke(main, ["ensemble"] + args)
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("heatvol: error: "), res.output
        assert needle in lines[0], lines[0]
    res = CliRunner().invoke(main, ["ensemble", "a.json", "--weights", "two"])
    assert res.exit_code == 2 and "--weights" in res.output
    res = CliRunner().invoke(main, ["ensemble"])
    assert res.exit_code == 2


def test_cli_help_has_an_example():
    res = CliRunner().invoke(main, ["ensemble", "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output and "heatvol ensemble" in res.output
    assert "--weights 2 2 1 1" in res.output
