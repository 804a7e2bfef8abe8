"""examples/paper/reproduce.py: trains in this process through keras_ssm.train, skips finished
runs, collects the small files and writes the generated table into a Markdown file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from fixtures import write_mnist

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.core


@pytest.fixture
def reproduce():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "examples/paper/reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_collect_table(reproduce, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KERAS_SSM_DATA_DIR", str(write_mnist(tmp_path / "data")))
    monkeypatch.setenv("KERAS_SSM_OFFLINE", "1")
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["run", "--rows", "fcn", "--seeds", "1", "--epochs", "1", "--limit", "256"]
    assert reproduce.main([*argv, "--out", str(runs)]) == 0
    names = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert names == ["fcn_none_default_ep1_s7531", "fcn_signed_default_ep1_s7531"]
    metrics = json.loads((runs / names[1] / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["config"]["limit"] == 256
    capsys.readouterr()
    assert reproduce.main([*argv, "--out", str(runs)]) == 0  # finished runs are skipped
    assert capsys.readouterr().out.count("[skip]") == 2

    assert reproduce.main(["collect", "--out", str(runs), "--results", str(results)]) == 0
    # the small files, never the .keras model; the signed run's compact model.ssm (few KB)
    assert sorted(p.name for p in (results / names[0]).iterdir()) == [
        "history.csv",
        "metrics.json",
    ]
    signed = results / names[1]
    small = ["history.csv", "metrics.json"]
    assert sorted(p.name for p in signed.iterdir()) == sorted([*small, "export.json", "model.ssm"])
    from keras_ssm.export import load_compact  # written on every backend

    assert (signed / "model.ssm").stat().st_size < 266_200 * 4 / 10  # 1 epoch: ~40% hidden
    assert load_compact(signed / "model.ssm").count_params() > 0
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# x\n{reproduce.BEGIN}\nSTALE ROW\n{reproduce.END}\ntail\n")
    assert reproduce.main(["table", "--results", str(results), "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "STALE ROW" not in text and text.endswith("tail\n")
    rows = [line for line in text.splitlines() if line.startswith("| fcn_")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| fcn_none_default_ep1",
        "| fcn_signed_default_ep1",
    ]
    assert "97.42 / 97.48 / 3.77%" in rows[1]


@pytest.mark.parametrize(("warmup", "text"), [(1.0, ", warm-up 1 epoch |"), (0.0, " |")])
def test_table_shows_a_warmup(reproduce, tmp_path: Path, warmup: float, text: str) -> None:
    run = tmp_path / "conv6_none_default_s7531"
    run.mkdir()
    recipe = {"lr": 0.008, "wd": 7e-4, "threshold": None, "warmup_epochs": warmup}
    metrics = {"model": "conv6", "dataset": "cifar10", "mask": "none", "recipe": recipe,
               "precision": "bfloat16", "epochs": 50, "test_accuracy": 0.75,
               "wall_time_s": 3600.0, "hardware": "cpu", "backend": "tensorflow"}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    (row,) = [line for line in reproduce.table(tmp_path).splitlines() if "conv6_none" in line]
    assert f"0.008 / 0.0007 / None / 1 / 0{text}" in row


def test_table_training_time_counts_every_session_of_a_resumed_run(
    reproduce, tmp_path: Path
) -> None:
    base = {"model": "conv2", "dataset": "cifar10", "mask": "none", "precision": "float32",
            "epochs": 3, "test_accuracy": 0.6, "hardware": "cpu", "backend": "tensorflow",
            "recipe": {"lr": 0.008, "wd": 7e-4, "threshold": None}}  # fmt: skip
    history = "epoch,loss,epoch_time_s\n0,1.0,1200\n1,0.9,1200\n2,0.8,1200\n"
    runs = {  # (metrics beyond base, history.csv or None) -> the row's training time
        "old_resumed": ({"wall_time_s": 1200.0, "resumed": True}, history, "60 min"),
        "new_resumed": ({"wall_time_s": 1200.0, "train_time_s": 5400.0}, history, "90 min"),
        "no_history": ({"wall_time_s": 600.0}, None, "10 min"),
    }
    for name, (extra, csv_text, _) in runs.items():
        run = tmp_path / f"conv2_{name}_s7531"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({**base, **extra}))
        if csv_text is not None:
            (run / "history.csv").write_text(csv_text)
    text = reproduce.table(tmp_path)
    assert "| training time / run |" in text.splitlines()[0]
    for name, (_, _, expected) in runs.items():
        (row,) = [line for line in text.splitlines() if f"| conv2_{name} |" in line]
        assert f"| {expected} |" in row, row
