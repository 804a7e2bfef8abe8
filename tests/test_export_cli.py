"""`ssm export` and `ssm bench` end to end on a tiny masked model and a tiny MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from fixtures import write_mnist

import keras_ssm
from keras_ssm import cli
from keras_ssm.cli import build_parser
from keras_ssm.export import load_compact, runtime

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="ONNX/LiteRT export converts through TensorFlow"
)

FILES = ["export.json", "model.onnx", "model.ssm", "model.tflite", "model_int8.onnx"]


def ssm(*argv: str) -> dict:
    """Run an ``ssm`` subcommand's function in this process (exceptions propagate)."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)


# Units removed by shrinking: {layer: (units before, no incoming weights, no outgoing weights)}.
DEAD = {"dense1": (24, 4, 4), "dense2": (12, 2, 2)}
PARAMS_FOLDED = 784 * 24 + 24 * 12 + 12 * 10
PARAMS_SHRUNK = 784 * 16 + 16 * 8 + 8 * 10


def _hide(layer: keras.layers.Layer, units: range = range(0), inputs: range = range(0)) -> None:
    """Hide every weight into ``units`` (columns) and out of ``inputs`` (rows): score 0."""
    scores = keras.ops.convert_to_numpy(layer.scores).copy()
    scores[:, list(units)] = 0.0
    scores[list(inputs), :] = 0.0
    layer.scores.assign(scores)


def make_run(folder: Path) -> Path:
    """A fake `ssm train` run folder: a tiny masked FCN (model.keras) + metrics.json.

    Whole units are hidden (see DEAD): dense1 units 0-3 and dense2 units 0-1 have no incoming
    weights (constant elu(0) = 0), dense1 units 20-23 and dense2 units 10-11 no outgoing ones.
    The other scores keep their random values (about 60% of the weights stay)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras_ssm.MaskedDense(24, activation="elu", use_bias=False, name="dense1")(x)
    x = keras_ssm.MaskedDense(12, activation="elu", use_bias=False, name="dense2")(x)
    outputs = keras_ssm.MaskedDense(10, activation="softmax", use_bias=False, name="output")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    _hide(model.get_layer("dense1"), units=range(4))
    _hide(model.get_layer("dense2"), units=range(2), inputs=range(20, 24))
    _hide(model.get_layer("output"), inputs=range(10, 12))
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"dataset": "mnist", "mask": "signed"}))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("export") / "run")
    argv = ["export", str(run), "--format", "onnx,litert,compact", "--shrink", "--int8", "--quiet"]
    assert cli.main(argv) == 0
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
        got = runtime.onnx_predict(out / name, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        runtime.litert_predict(out / "model.tflite", x), want, rtol=1e-5, atol=1e-6
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


def test_shrink_removes_the_hidden_units(exported: Path) -> None:
    """export.json's shrink report names exactly the hidden units, and the files hold the
    shrunk model."""
    out = exported / "export"
    report = json.loads((out / "export.json").read_text())
    assert report["shrink"] is True
    assert report["params_folded"] == PARAMS_FOLDED
    shrunk = report["shrink_report"]
    assert (shrunk["params_before"], shrunk["params_after"]) == (PARAMS_FOLDED, PARAMS_SHRUNK)
    layers = {
        e["name"]: (e["units_before"], e["removed_no_input"], e["removed_no_output"])
        for e in shrunk["layers"]
    }
    assert layers == DEAD
    for e in shrunk["layers"]:
        removed = e["removed_no_input"] + e["removed_no_output"]
        assert e["units_after"] == e["units_before"] - removed
        assert not e["bias_added"] and not e["bias_folded"]  # the constants are elu(0) = 0
    assert report["shrink_max_rel_error"] <= 1e-6
    compact = load_compact(out / "model.ssm")
    assert compact.count_params() == PARAMS_SHRUNK
    assert [layer.units for layer in compact.layers if hasattr(layer, "units")] == [16, 8, 10]
    for name in ("model.onnx", "model_int8.onnx"):
        graph = onnx.load(str(out / name)).graph
        weights = sorted(tuple(w.dims) for w in graph.initializer if len(w.dims) == 2)
        assert weights == [(8, 10), (16, 8), (784, 16)], name


def test_bench_measures_the_artifacts(exported: Path, data_dir: Path) -> None:
    result = keras_ssm.export.bench_run(
        exported, limit=24, runs=50, warmup=1, threads=1, overwrite=True
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
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match="--force"):
        ssm("bench", str(exported), "--limit", "8", "--runs", "50", "--quiet")
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match="at least 50"):
        ssm("bench", str(exported), "--runs", "10", "--force")


def test_existing_files_are_kept_without_force(exported: Path) -> None:
    out = exported / "export"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name in FILES}
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match="--force"):
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

    monkeypatch.setattr(keras_ssm.export.tflite, "to_tflite", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        ssm("export", str(run), "--quiet")  # onnx is written first, then litert fails
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "model.keras"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--format", "onnx,pdf"], "--format"),
        (["--format", "litert", "--int8"], "--int8"),
        (["--format", "onnx", "--code-bits", "2"], "--code-bits.*add int8=True"),
    ],
)
def test_usage_errors(tmp_path: Path, argv: list[str], match: str) -> None:
    run = make_run(tmp_path / "run")
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match=match):
        ssm("export", str(run), *argv)
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match="no model"):
        ssm("export", str(tmp_path / "missing"))
    with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match="ssm export"):
        ssm("bench", str(run))


@pytest.mark.parametrize("bits", [4, 2])
def test_code_bits_write_a_narrower_exact_file(tmp_path: Path, bits: int) -> None:
    """``--int8 --code-bits 4|2``: model_int4.onnx / model_int2.onnx, exact, and smaller than
    the int8 file."""
    run = make_run(tmp_path / "run")
    argv = ["--format", "onnx", "--shrink", "--int8", "--quiet"]
    ssm("export", str(run), *argv, "--out-dir", str(tmp_path / "b8"))
    report = ssm(
        "export", str(run), *argv, "--code-bits", str(bits), "--out-dir", str(tmp_path / "b")
    )
    name = f"model_int{bits}.onnx"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["export.json", "model.onnx", name]
    assert report["code_bits"] == bits and report["files"][name]["opset"] == {4: 21, 2: 25}[bits]
    assert {w["bits"] for w in report["files"][name]["int8_weights"]} == {bits}
    x = np.random.default_rng(0).standard_normal((5, 28, 28, 1)).astype("float32")
    got = runtime.onnx_predict(tmp_path / "b" / name, x)
    np.testing.assert_array_equal(got, runtime.onnx_predict(tmp_path / "b" / "model.onnx", x))
    narrow = (tmp_path / "b" / name).stat().st_size
    assert narrow < (tmp_path / "b8" / "model_int8.onnx").stat().st_size
    with pytest.raises(SystemExit):  # argparse: invalid choice
        ssm("export", str(run), *argv, "--code-bits", "3")
    with pytest.raises(ValueError, match="code_bits .--code-bits. must be one of 8, 4, 2; got 3"):
        keras_ssm.export.export_run(run, "onnx", int8=True, code_bits=3, out_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_committed_results_folder_exports_from_its_compact_file(
    exported: Path, tmp_path: Path
) -> None:
    """A folder that keeps only ``model.ssm`` and ``metrics.json`` (what
    ``examples/paper/results/<run>`` commits) re-exports like the run it came from; so does
    the ``.ssm`` file itself."""
    import shutil

    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("metrics.json",):
        shutil.copy(exported / name, folder / name)
    shutil.copy(exported / "export" / "model.ssm", folder / "model.ssm")
    report = ssm("export", str(folder), "--format", "onnx", "--int8", "--quiet")
    assert report["source"] == str(folder / "model.ssm") and report["dataset"] == "mnist"
    x = np.random.default_rng(4).standard_normal((5, 28, 28, 1)).astype("float32")
    want = _reference(exported, x)
    for name in ("model.onnx", "model_int8.onnx"):
        got = runtime.onnx_predict(folder / "export" / name, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    again = ssm("export", str(folder / "model.ssm"), "--format", "compact", "--out-dir",
                str(tmp_path / "again"), "--quiet")  # fmt: skip
    assert again["files"]["model.ssm"]["bytes"] == (folder / "model.ssm").stat().st_size


def test_out_dir_opset_and_bench_threads(tmp_path: Path, data_dir: Path) -> None:
    run = make_run(tmp_path / "run")
    dest = tmp_path / "elsewhere"
    ssm("export", str(run), "--format", "onnx", "--out-dir", str(dest), "--opset", "13", "--quiet")
    assert sorted(p.name for p in dest.iterdir()) == ["export.json", "model.onnx"]
    assert not (run / "export").exists()
    opsets = {o.domain: o.version for o in onnx.load(str(dest / "model.onnx")).opset_import}
    assert opsets[""] == 13
    argv = ["bench", str(run), "--export-dir", str(dest), "--limit", "8", "--runs", "50"]
    result = ssm(*argv, "--warmup", "0", "--threads", "2", "--quiet")
    assert result["threads"]["onnxruntime"]["intra_op_num_threads"] == 2
    assert result["threads"]["litert"]["num_threads"] == 2
    assert json.loads((dest / "bench.json").read_text())["runs"] == 50


def _conv_run(folder: Path) -> Path:
    """A tiny masked convnet run whose shrunk first convolution keeps 27 of its 40 filters."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras_ssm.layers.MaskedConv2D(40, 3, activation="elu", use_bias=False, name="c1")(inputs)
    x = keras_ssm.layers.MaskedConv2D(20, 3, activation="elu", use_bias=False, name="c2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras_ssm.MaskedDense(10, use_bias=False, name="output")(x)
    model = keras.Model(inputs, outputs, name="tinyconv")
    c1 = model.get_layer("c1")
    scores = keras.ops.convert_to_numpy(c1.scores).copy()
    scores[..., :13] = 0.0  # 13 filters with no incoming weights: elu(0) = 0, removed
    c1.scores.assign(scores)
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"dataset": "cifar10", "mask": "signed"}))
    return folder


def test_onnx_files_pad_shrunk_convolutions_to_the_channel_block(tmp_path: Path) -> None:
    """With --shrink the ONNX files get 32 filters (27 live + 5 zero) in the first convolution,
    so that onnxruntime keeps its blocked convolution for the second; LiteRT and the compact
    file keep the shrunk 27; every file still equals Keras (the pipeline checks each)."""
    run = _conv_run(tmp_path / "run")
    argv = ["--format", "onnx,litert,compact", "--shrink", "--int8", "--quiet"]
    report = ssm("export", str(run), *argv, "--out-dir", str(tmp_path / "a"))
    aligned = report["onnx_channel_alignment"]
    assert aligned["multiple"] == 16 and aligned["filters"] == {"c1": [27, 32]}
    assert aligned["max_rel_error"] <= 1e-6  # the padded model against the trained one

    def conv_out_channels(path: Path) -> list[int]:
        graph = onnx.load(str(path)).graph
        dims = {t.name: list(t.dims) for t in graph.initializer}
        return [dims[n.input[1]][0] for n in graph.node if n.op_type == "Conv"]

    assert conv_out_channels(tmp_path / "a" / "model.onnx")[0] == 32
    assert load_compact(tmp_path / "a" / "model.ssm").get_layer("c1").filters == 27
    x = np.random.default_rng(0).random((4, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(
        runtime.onnx_predict(tmp_path / "a" / "model_int8.onnx", x),
        runtime.onnx_predict(tmp_path / "a" / "model.onnx", x),
    )
    again = ssm(  # from the compact (already shrunk) file: padded all the same
        "export", str(tmp_path / "a" / "model.ssm"), "--format", "onnx", "--shrink", "--quiet",
        "--out-dir", str(tmp_path / "again"),
    )  # fmt: skip
    assert again["onnx_channel_alignment"]["filters"] == {"c1": [27, 32]}
    off = ssm(
        "export", str(run), *argv, "--channel-multiple", "0", "--out-dir", str(tmp_path / "b")
    )
    assert "onnx_channel_alignment" not in off
    assert conv_out_channels(tmp_path / "b" / "model.onnx")[0] == 27
    with pytest.raises(ValueError, match="channel_multiple .--channel-multiple. must be 0"):
        ssm("export", str(run), *argv, "--channel-multiple", "1", "--out-dir", str(tmp_path / "c"))
    with pytest.raises(SystemExit):  # argparse: not a number >= 0
        ssm("export", str(run), *argv, "--channel-multiple", "-4")
    assert not (tmp_path / "c").exists()
