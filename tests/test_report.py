"""`ssm report` end to end on tiny runs: valid, non-empty PNGs and one self-contained page."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_mnist

from keras_ssm import analysis, cli, report

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _main(argv: list[str]) -> int:
    return cli.main(argv)


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE, path
    width, height = struct.unpack(">II", blob[16:24])
    assert width > 100 and height > 100, (path, width, height)
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    assert float(pixels[..., :3].std()) > 0.01, f"{path} looks blank"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Tiny FCN runs of `ssm train`: signed without its analysis.jsonl (the history.csv
    fallback), signed as written (with the MaskRecorder's file), dense."""
    root = tmp_path_factory.mktemp("report")
    data = write_mnist(root / "data", n_train=256, n_test=64)
    made: dict[str, Path] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_SSM_DATA_DIR", str(data))
        mp.setenv("KERAS_SSM_OFFLINE", "1")
        for name, mask in (("signed", "signed"), ("recorded", "signed"), ("dense", "none")):
            out = root / "runs" / f"fcn_{name}_s1"
            argv = ["train", "--model", "fcn", "--mask", mask, "--epochs", "2"]
            assert cli.main([*argv, "--verbose", "0", "--out", str(out)]) == 0
            if name == "signed":
                (out / "analysis.jsonl").unlink()
            made[name] = out
        yield made


def test_report_on_a_tiny_run(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert _main(["report", str(runs["signed"]), "--out", str(out), "--no-data"]) == 0
    assert "ssm report: wrote" in capsys.readouterr().out
    run_dir = out / runs["signed"].name
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["evolution.png", "input_map.png", "layers.png", "scores.png"]
    pngs = [out / "frontier.png", *(run_dir / n for n in names)]
    for png in pngs:
        _check_png(png)
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/png;base64,") == len(pngs)  # self-contained
    assert "keras_ssm summary" in page and "What the masks show" in page
    assert "input pixels feed no remaining weight" in page
    assert "from history.csv" in page  # no analysis.jsonl: the curves come from history.csv
    markdown = (out / "report.md").read_text()
    for png in pngs:
        assert f"]({png.relative_to(out).as_posix()})" in markdown
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".*.png"))


def test_report_uses_the_recorder_file_and_the_mean_image(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs["recorded"]
    records = analysis.read_records(run)
    assert [r["epoch"] for r in records] == [0, 1, 2]  # what `ssm train` + MaskRecorder wrote
    data = write_mnist(tmp_path / "data", n_train=32, n_test=32)
    result = report.make_report([run], tmp_path / "out", data_dir=str(data))
    assert result["seconds"] < 60
    for png in result["images"]:
        _check_png(png)
    page = result["html"].read_text()
    assert "from analysis.jsonl" in page
    assert "mean image: r = " in page  # the data's mean image was loaded and compared


def test_report_frontier_over_several_runs_and_dense(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["report", *(str(p) for p in runs.values()), "--out", str(out), "--no-data"]
    assert _main(argv) == 0
    # labels drop what all folder names share ("fcn_" ... "_s1")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dense", "recorded", "signed"]
    _check_png(out / "frontier.png")
    assert sorted(p.name for p in (out / "dense").iterdir()) == ["evolution.png"]
    page = (out / "report.html").read_text()
    assert "no masked layers" in page
    assert page.count("<h2>Run ") == 3


def test_report_default_out_and_usage_errors(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = runs["signed"]
    assert _main(["report", str(run), "--no-data", "--quiet"]) == 0
    assert (run / "report" / "report.html").is_file()
    assert capsys.readouterr().out == ""

    assert _main(["report", str(run), str(runs["dense"])]) == 2
    assert "several runs need --out" in capsys.readouterr().err
    assert _main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(["report", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _main(["report", str(run), "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_labels_and_plots_on_their_own(tmp_path: Path) -> None:
    from keras_ssm import plots

    paths = [Path("runs/fcn_wd2.5e-4_s7531"), Path("runs/fcn_wd2e-4_s7531")]
    assert report._labels(paths) == ["wd2.5e-4", "wd2e-4"]
    assert report._labels([Path("a/run"), Path("b/run")]) == ["run", "run_2"]
    points = [
        {"model": "fcn", "accuracy": 0.975, "remaining": 0.03, "label": "a"},
        {"model": "fcn", "accuracy": 0.972, "remaining": 0.02, "label": "b"},
        {"model": "fcn", "accuracy": 0.977, "remaining": None, "label": "dense"},
        {"model": "conv6", "accuracy": 0.79, "remaining": 0.025, "label": "c"},
    ]
    _check_png(plots.frontier(points, tmp_path / "frontier.png"))
    columns = {"epoch": [1, 2, 3], "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    _check_png(plots.evolution(columns, tmp_path / "evolution.png"))  # a dense run's history
    with pytest.raises(ValueError, match="nothing to draw"):
        plots.evolution({"epoch": [1]}, tmp_path / "x.png")
    rng = np.random.default_rng(0)
    maps = {
        "layer": "dense1",
        "units": 4,
        "remaining": rng.integers(0, 4, (6, 6)),
        "positive": rng.integers(0, 2, (6, 6)),
        "negative": rng.integers(0, 2, (6, 6)),
    }
    _check_png(plots.input_map(maps, tmp_path / "map.png", mean_image=rng.random((6, 6, 1))))
    json.dumps(points)  # the frontier's inputs are plain JSON-able values


def test_doctests() -> None:
    import doctest

    from keras_ssm import plots

    for module in (plots, report):
        results = doctest.testmod(module)
        assert results.attempted > 0 and results.failed == 0, module.__name__
