"""The command line: --version, --help with an example on every command, one-line errors."""

import json

import pytest
from click.testing import CliRunner

import heatvol
from heatvol.cli import main


def all_commands():
    return sorted(main.commands)


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and heatvol.__version__ in res.output


@pytest.mark.parametrize("command", all_commands())
def test_every_command_has_help_with_an_example(command):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output, f"`heatvol {command} --help` shows no example"
    assert f"heatvol {command}" in res.output


def test_info_and_check_on_a_small_store(tmp_path):
    import numpy as np
    path = tmp_path / "p.h5"
    with heatvol.PoseWriter(path, layout="coco17", classes=["wave", "jump"]) as w:
        w.append("a", np.zeros((1, 3, 17, 2)), np.ones((1, 3, 17)), label=1, img_shape=(8, 8))
        w.append("b", np.zeros((0, 2, 17, 2)), np.ones((0, 2, 17)), label=0, img_shape=(8, 8))
        w.set_splits({"train": ["a"], "test": ["b"]})
        w.add_failure("c", "corrupt file")
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(path)])
    assert res.exit_code == 0
    for text in ("coco17", "sequences   2", "wave", "jump", "train: 1", "c: corrupt file"):
        assert text in res.output, text
    res = runner.invoke(main, ["info", str(path), "--json"])
    summary = json.loads(res.output)
    assert summary["sequences"] == 2 and summary["classes"] == {"wave": 1, "jump": 1}
    assert summary["persons_per_sequence"] == {"0": 1, "1": 1}
    res = runner.invoke(main, ["check", str(path)])
    assert res.exit_code == 0 and "OK (2 sequences)" in res.output


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("nonsense")
    for args in (["info", str(bad)], ["check", str(bad)], ["info", str(tmp_path / "none.h5")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("heatvol: error: "), res.output
