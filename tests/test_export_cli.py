"""`ssm export` and `ssm bench` end to end on a tiny masked model and a tiny MNIST."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import write_mnist

import keras_ssm
from keras_ssm.cli import UsageError
from keras_ssm.export import commands, load_compact

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="ONNX/LiteRT export converts through TensorFlow"
)

FILES = ["export.json", "model.onnx", "model.ssm", "model.tflite", "model_int8.onnx"]


def ssm(*argv: str) -> dict:
    """Run an ``ssm`` subcommand through a parser built with :func:`commands.register`."""
    parser = argparse.ArgumentParser(prog="ssm")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def make_run(folder: Path) -> Path:
    """A fake `ssm train` run folder: a tiny masked FCN (model.keras) + metrics.json."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras_ssm.MaskedDense(24, activation="elu", use_bias=False, name="dense1")(x)
    x = keras_ssm.MaskedDense(12, activation="elu", use_bias=False, name="dense2")(x)
    outputs = keras_ssm.MaskedDense(10, activation="softmax", use_bias=False, name="output")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"dataset": "mnist", "mask": "signed"}))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("export") / "run")
    ssm("export", str(run), "--format", "onnx,litert,compact", "--shrink", "--int8", "--quiet")
    return run


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_mnist(tmp_path / "data", n_train=16, n_test=40)
    monkeypatch.setenv("KERAS_SSM_DATA_DIR", str(folder))
    monkeypatch.setenv("KERAS_SSM_OFFLINE", "1")
    return folder


def _reference(run: Path, x: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(run / "model.keras")
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_export_writes_every_format_and_they_match_keras(exported: Path) -> None:
    out = exported / "export"
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]  # no staging left
    x = np.random.default_rng(0).standard_normal((5, 28, 28, 1)).astype("float32")
    want = _reference(exported, x)
    for name in ("model.onnx", "model_int8.onnx"):
        got = commands.onnx_predict(out / name, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        commands.litert_predict(out / "model.tflite", x), want, rtol=1e-5, atol=1e-6
    )
    reloaded = load_compact(out / "model.ssm")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)), want, rtol=1e-6, atol=1e-7)
    report = json.loads((out / "export.json").read_text())
    assert report["formats"] == ["onnx", "litert", "compact"] and report["shrink"]
    assert report["fold_max_rel_error"] <= 1e-6
    for name in FILES[1:]:
        entry = report["files"][name]
        assert entry["bytes"] == (out / name).stat().st_size and entry["gzip_bytes"] > 0
    assert report["files"]["model_int8.onnx"]["int8_weights"]


def test_bench_measures_the_artifacts(exported: Path, data_dir: Path) -> None:
    result = commands.cmd_bench(
        argparse.Namespace(
            run=str(exported),
            export_dir=None,
            dataset=None,
            data_dir=None,
            limit=24,
            runs=50,
            warmup=1,
            threads=1,
            force=True,
            quiet=True,
        )
    )
    saved = json.loads((exported / "export" / "bench.json").read_text())
    assert saved["test_images"] == result["test_images"] == 24
    assert set(saved["artifacts"]) == {"model.onnx", "model_int8.onnx", "model.tflite", "model.ssm"}
    for name, entry in saved["artifacts"].items():
        assert entry["accuracy"] == saved["keras_accuracy"], name
        assert entry["prediction_mismatches_vs_keras"] == 0
        assert entry["bytes"] > 0 and entry["gzip_bytes"] > 0
        if name != "model.ssm":
            for b in ("batch1", "batch64"):
                assert entry["latency"][b]["runs"] == 50 and entry["latency"][b]["median_us"] > 0
    assert saved["threads"]["onnxruntime"]["intra_op_num_threads"] == 1
    with pytest.raises(UsageError, match="--force"):
        ssm("bench", str(exported), "--limit", "8", "--runs", "50", "--quiet")
    with pytest.raises(UsageError, match="at least 50"):
        ssm("bench", str(exported), "--runs", "10", "--force")


def test_existing_files_are_kept_without_force(exported: Path) -> None:
    out = exported / "export"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name in FILES}
    with pytest.raises(UsageError, match="--force"):
        ssm("export", str(exported), "--format", "onnx", "--quiet")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in FILES} == before


def test_force_replaces(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    ssm("export", str(run), "--format", "compact", "--quiet")
    first = (run / "export" / "export.json").read_text()
    ssm("export", str(run), "--format", "compact", "--shrink", "--force", "--quiet")
    assert (run / "export" / "export.json").read_text() != first
    assert sorted(p.name for p in (run / "export").iterdir()) == ["export.json", "model.ssm"]


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(keras_ssm.export, "to_tflite", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        ssm("export", str(run), "--quiet")  # onnx is written first, then litert fails
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "model.keras"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--format", "onnx,pdf"], "--format"),
        (["--format", "litert", "--int8"], "--int8"),
    ],
)
def test_usage_errors(tmp_path: Path, argv: list[str], match: str) -> None:
    run = make_run(tmp_path / "run")
    with pytest.raises(UsageError, match=match):
        ssm("export", str(run), *argv)
    with pytest.raises(UsageError, match="no model"):
        ssm("export", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="ssm export"):
        ssm("bench", str(run))
