"""The graph models through the training loop and CLI: resume, test results, ensembles, errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from heatvol.cli import main
from heatvol.training import ConfigError, TrainConfig, load_checkpoint, train

from conftest import assert_same_state, make_messy_store, make_oscillating_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_oscillating_store(tmp_path_factory.mktemp("poses") / "poses.h5", persons=2)


SMALL = {"stgcn": {}, "msg3d": {"num_gcn_scales": 2, "num_g3d_scales": 2},
         "dualhead": {"num_gcn_scales": 2, "num_g3d_scales": 2}}


def tiny_gcn(store, work_dir, model="dualhead", **kw):
    settings = dict(poses=str(store), work_dir=str(work_dir), model=model,
                    model_kwargs=SMALL[model], modality="bone", clip_len=8, max_persons=2,
                    rotate=0.2, scale=0.1, batch_size=4, lr=0.05, epochs=2, workers=0,
                    device="cpu", progress=False, warmup_epochs=0.5, val_every=1, seed=3)
    settings.update(kw)
    return TrainConfig(**settings)


def test_gcn_stop_and_resume_equals_an_uninterrupted_run(store, tmp_path):
    full = train(tiny_gcn(store, tmp_path / "full"))
    assert full["steps"] == 6 and full["stopped"] == "end" and full["render_device"] is None
    part = train(tiny_gcn(store, tmp_path / "part", max_steps=4))
    assert part["stopped"] == "max_steps"
    done = train(tiny_gcn(store, tmp_path / "part", resume="auto"))
    assert done["steps"] == 6
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "part"))
    assert_same_state(a["model"], b["model"])
    assert a["best"] == b["best"] and a["best"]["top1"] >= 0
    assert a["config"]["modality"] == "bone"


def test_dualhead_loss_is_the_mean_of_its_heads(store, tmp_path):
    from heatvol.training import build_model
    from heatvol.training.loop import training_loss

    cfg = tiny_gcn(store, tmp_path)
    model = build_model(cfg, layout="coco17", num_classes=3).eval()
    x = torch.randn(4, 2, 8, 17, 3)
    y = torch.tensor([0, 1, 2, 1])
    fine, coarse = model(x, return_heads=True)
    expected = (torch.nn.functional.cross_entropy(fine, y)
                + torch.nn.functional.cross_entropy(coarse, y)) / 2
    torch.testing.assert_close(training_loss(model, model, x, y, 0.0), expected)


@pytest.mark.parametrize("model", ["stgcn", "msg3d"])
def test_cli_train_test_and_ensemble_of_two_streams(store, tmp_path, model):
    runner = CliRunner()
    results = []
    for modality in ("joint", "bone-motion"):
        work = tmp_path / modality
        res = runner.invoke(main, ["train", str(store), "--preset", "tiny-gcn", "--model", model,
                                   "--modality", modality, "--work-dir", str(work),
                                   "--max-steps", "2", "--device", "cpu", "--quiet", "--set",
                                   f"model_kwargs={json.dumps(SMALL[model])}"])
        assert res.exit_code == 0, res.output
        out = tmp_path / f"{modality}.json"
        res = runner.invoke(main, ["test", str(store), "-c", str(work / "last.pt"), "--split",
                                   "test", "--num-clips", "2", "--flip", "--quiet", "--out",
                                   str(out)])
        assert res.exit_code == 0, res.output
        saved = json.loads(out.read_text())
        assert saved["modality"] == modality and saved["model"] == model
        assert len(saved["scores"]) == len(saved["names"]) == saved["num_samples"] == 6
        assert all(abs(sum(p) - 1) < 1e-6 for p in saved["scores"])
        results.append(str(out))
    res = runner.invoke(main, ["ensemble", *results, "--weights", "2", "1", "--json"])
    assert res.exit_code == 0, res.output
    fused = json.loads(res.output)
    assert fused["num_samples"] == 6 and [s["weight"] for s in fused["streams"]] == [2, 1]


def test_gcn_on_a_3d_store_and_cnn_refuses_it(tmp_path):
    path = tmp_path / "p3.h5"
    make_messy_store(path, dims=3, n=8, persons=1).close()
    summary = train(tiny_gcn(path, tmp_path / "run", model="stgcn", max_persons=1, epochs=1,
                             rotate=[0.5, 0.5, 0], align=True))
    assert summary["steps"] == 1
    with pytest.raises(ConfigError, match="3D.*graph model"):
        train(TrainConfig(poses=str(path), work_dir=str(tmp_path / "cnn"), model="x3d",
                          device="cpu", progress=False))


def test_gcn_errors_are_one_line(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["train", str(store), "--preset", "tiny-gcn", "--render-device", "cuda",
                               "--work-dir", str(tmp_path)])
    assert res.exit_code != 0 and "reads joint coordinates" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main, ["train", str(store), "--preset", "tiny-gcn", "--modality", "bones"])
    assert res.exit_code != 0 and "bone-motion" in res.output
    res = runner.invoke(main, ["train", str(store), "--preset", "tiny-gcn", "--set", "align=true",
                               "--work-dir", str(tmp_path)])
    assert res.exit_code != 0 and "align turns 3D skeletons" in res.output
    assert len(res.output.strip().splitlines()) == 1
