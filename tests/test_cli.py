"""`ssm train`, `ssm eval`, `ssm summary` end to end on a tiny MNIST."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fixtures import write_mnist

from keras_ssm import cli

pytestmark = pytest.mark.core  # `ssm train` runs on the JAX backend too


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_mnist(tmp_path / "data")
    monkeypatch.setenv("KERAS_SSM_DATA_DIR", str(folder))
    monkeypatch.setenv("KERAS_SSM_OFFLINE", "1")
    return folder


@pytest.mark.parametrize("mask", ["signed", "none"])
def test_train_writes_model_metrics_and_history(data_dir: Path, tmp_path: Path, mask: str) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--model",
        "fcn",
        "--mask",
        mask,
        "--epochs",
        "2",
        "--verbose",
        "0",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    written = sorted(p.name for p in out.iterdir())
    expected = ["history.csv", "metrics.json", "model.keras"]
    assert written == sorted(expected + (["analysis.jsonl"] if mask == "signed" else []))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "epochs",
        "seed",
        "wall_time_s",
        "config",
        "versions",
        "backend",
        "recipe",
        "hardware",
    ):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["seed"] == 7531
    assert metrics["test_accuracy"] > 0.3  # the tiny digits are learnable
    if mask == "signed":
        assert 0 < metrics["remaining"] < 1
        assert [row["name"] for row in metrics["layers"]]
    else:
        assert "remaining" not in metrics
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert cli.main(["eval", str(out), "--verbose", "0"]) == 0
    assert cli.main(["summary", str(out)]) == (0 if mask == "signed" else 2)


def test_existing_run_needs_force(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn", "--epochs", "1", "--verbose", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    before = (out / "model.keras").read_bytes()
    assert cli.main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == before
    assert cli.main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "fcn2", "--out", "x"], "invalid choice: 'fcn2'"),
        (["train", "--model", "fcn", "--mask", "ternary", "--out", "x"], "invalid choice"),
        (["train", "--model", "fcn", "--threshold", "0", "--out", "x"], "threshold must be in"),
        (["train", "--model", "fcn", "--epochs", "-3", "--out", "x"], "epochs must be in"),
        (["train", "--model", "fcn", "--lr", "abc", "--out", "x"], "learning rate must be a"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_missing_or_corrupt_run(tmp_path: Path, capsys) -> None:
    assert cli.main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no model at" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.keras").write_bytes(b"PK\x03\x04 not a zip")
    assert cli.main(["summary", str(tmp_path / "bad")]) == 2
    assert "cannot load" in capsys.readouterr().err
