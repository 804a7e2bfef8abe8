"""keras_ssm.analysis: statistics on hand-built masks (known answers) and the recorder callback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm import analysis
from keras_ssm.layers import MaskedConv2D, MaskedDense

pytestmark = pytest.mark.core

TAU = 0.5


def _set_mask(layer: keras.layers.Layer, mask: np.ndarray, w0: np.ndarray | None = None) -> None:
    """Make ``layer``'s signed mask exactly ``mask`` (scores ±1 or 0 against tau = 0.5)."""
    layer.mask_state["tau"].assign(TAU)
    layer.scores.assign(np.asarray(mask, dtype="float32"))
    if w0 is not None:
        layer.w0.assign(np.asarray(w0, dtype="float32"))


def _numpy_mask(layer: keras.layers.Layer) -> np.ndarray:
    """The signed mask M = +1 if s > tau, -1 if s < -tau, else 0, computed here in numpy."""
    scores = keras.ops.convert_to_numpy(layer.scores)
    tau = keras.ops.convert_to_numpy(layer.mask_state["tau"])
    return (scores > tau).astype(int) - (scores < -tau).astype(int)


def _dense_chain(masks: list[np.ndarray]) -> keras.Model:
    inputs = keras.Input((masks[0].shape[0],))
    x = inputs
    layers = []
    for i, mask in enumerate(masks):
        layer = MaskedDense(mask.shape[1], use_bias=False, name=f"d{i}")
        x = layer(x)
        layers.append(layer)
    model = keras.Model(inputs, x)
    for layer, mask in zip(layers, masks, strict=True):
        _set_mask(layer, mask)
    return model


def test_mask_counts_dense_known_answers() -> None:
    mask = np.array([[1, 0, 0], [0, 0, 0], [-1, 0, 1], [0, 0, -1]])  # 4 inputs -> 3 units
    w0 = np.array([[1, 1, 1], [1, 1, 1], [1, 1, -1], [1, 1, -1]])
    row = analysis.mask_counts(mask, w0)
    assert (row["total"], row["kept"], row["hidden"], row["inverted"]) == (12, 2, 8, 2)
    assert row["remaining"] == pytest.approx(4 / 12)
    assert row["kept_frac"] == pytest.approx(2 / 12)
    assert row["inverted_frac"] == pytest.approx(2 / 12)
    assert row["flipped"] == pytest.approx(0.5)
    assert (row["units"], row["no_incoming"]) == (3, 1)  # unit 1 receives nothing
    assert (row["inputs"], row["no_outgoing"]) == (4, 1)  # input 1 feeds nothing
    # effective signs: +1*1, -1*1, +1*-1, -1*-1  ->  two positive, two negative
    assert (row["positive"], row["negative"]) == (2, 2)


def test_mask_counts_conv_known_answers() -> None:
    mask = np.zeros((3, 3, 2, 4))  # 2 input channels -> 4 filters
    mask[1, 1, 0, 0] = 1
    mask[0, 2, 0, 1] = -1
    mask[2, 2, 0, 1] = -1
    row = analysis.mask_counts(mask)
    assert (row["kept"], row["inverted"], row["hidden"]) == (1, 2, 72 - 3)
    assert (row["units"], row["no_incoming"]) == (4, 2)  # filters 2 and 3 are empty
    assert (row["inputs"], row["no_outgoing"]) == (2, 1)  # input channel 1 is unused
    assert row["flipped"] == pytest.approx(2 / 3)
    assert "positive" not in row


def test_mask_counts_all_hidden_and_bad_shape() -> None:
    row = analysis.mask_counts(np.zeros((2, 2)))
    assert row["remaining"] == 0 and row["flipped"] == 0.0
    assert row["no_incoming"] == 2 and row["no_outgoing"] == 2
    with pytest.raises(ValueError, match="kernel-shaped"):
        analysis.mask_counts(np.zeros(5))


def test_layer_stats_on_a_hand_set_layer() -> None:
    layer = MaskedDense(2, use_bias=False)
    layer.build((None, 3))
    _set_mask(layer, [[1, 0], [0, -1], [0, 0]], w0=[[-1, 1], [1, 1], [1, 1]])
    row = analysis.layer_stats(layer)
    assert row["name"] == layer.name and row["class"] == "MaskedDense"
    assert row["tau"] == pytest.approx(TAU)
    assert (row["kept"], row["inverted"], row["hidden"]) == (1, 1, 4)
    assert (row["positive"], row["negative"]) == (0, 2)  # -1*+1 and +1*-1
    arrays = analysis.layer_arrays(layer)
    np.testing.assert_array_equal(arrays["mask"], [[1, 0], [0, -1], [0, 0]])


def test_model_stats_dead_units_in_a_dense_chain() -> None:
    first = np.array([[1, 0, 1], [0, 0, -1]])  # unit 1 of d0 receives nothing
    second = np.array([[1, 0], [1, 0], [0, 0]])  # d1 ignores unit 2 of d0; d1 unit 1 gets nothing
    model = _dense_chain([first, second])
    stats = analysis.model_stats(model)
    d0, d1 = stats["layers"]
    assert d0["no_incoming"] == 1 and d0["no_outgoing_units"] == 1
    assert d0["dead_units"] == 2  # unit 1 (no input) and unit 2 (no output)
    assert d1["no_incoming"] == 1 and d1["no_outgoing_units"] is None  # the output layer
    assert d1["dead_units"] == 1
    assert stats["total"] == 6 + 6 and stats["kept"] == 4 and stats["inverted"] == 1
    assert stats["remaining"] == pytest.approx(5 / 12)
    assert stats["flipped"] == pytest.approx(1 / 5)
    # keras_ssm.mask_stats: the same counts, by hand
    base = keras_ssm.mask_stats(model)
    assert (base["total"], base["kept"], base["inverted"], base["hidden"]) == (12, 4, 1, 7)
    assert base["remaining"] == pytest.approx(5 / 12)
    assert base["flipped"] == pytest.approx(1 / 5)


def test_model_stats_conv_to_dense_through_flatten() -> None:
    inputs = keras.Input((2, 2, 1))
    conv = MaskedConv2D(3, 1, use_bias=False, name="conv")
    x = conv(inputs)
    x = keras.layers.Flatten()(x)
    dense = MaskedDense(2, use_bias=False, name="dense")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    _set_mask(conv, np.ones((1, 1, 1, 3)))
    dense_mask = np.ones((12, 2))
    dense_mask[2::3] = 0  # channels-last flatten: every third row comes from filter 2
    _set_mask(dense, dense_mask)
    row = analysis.model_stats(model)["layers"][0]
    assert row["no_incoming"] == 0 and row["no_outgoing_units"] == 1 and row["dead_units"] == 1


@pytest.mark.parametrize(
    ("middle", "no_outgoing_units"),
    [
        (lambda: [], 1),
        (lambda: [keras.layers.ReLU()], 1),
        (lambda: [keras.layers.PReLU()], 1),
        (lambda: [keras.layers.Dropout(0.5), keras.layers.BatchNormalization()], 1),
        # mixing channels: unit 1 still moves the others, so it is not dead
        (lambda: [keras.layers.LayerNormalization()], None),
        (lambda: [keras.layers.Softmax()], None),
        (lambda: [keras.layers.Activation("softmax")], None),
    ],
)
def test_model_stats_dead_units_through_per_channel_layers_only(middle, no_outgoing_units) -> None:
    first = np.ones((3, 4))
    second = np.ones((4, 2))
    second[1] = 0  # the second layer keeps no weight from unit 1 of the first
    model = keras.Sequential(
        [
            keras.Input((3,)),
            MaskedDense(4, use_bias=False, name="d0"),
            *middle(),
            MaskedDense(2, use_bias=False, name="d1"),
        ]
    )
    _set_mask(model.get_layer("d0"), first)
    _set_mask(model.get_layer("d1"), second)
    row = analysis.model_stats(model)["layers"][0]
    assert row["no_outgoing_units"] == no_outgoing_units
    assert row["dead_units"] == (no_outgoing_units or 0)


def test_model_stats_no_dead_units_behind_softmax_or_a_model_output() -> None:
    inputs = keras.Input((3,))
    soft = MaskedDense(4, activation="softmax", use_bias=False, name="soft")
    shown = MaskedDense(4, use_bias=False, name="shown")  # also a model output
    last = MaskedDense(2, use_bias=False, name="last")
    h = shown(soft(inputs))
    model = keras.Model(inputs, [h, last(h)])
    for layer in (soft, shown, last):
        mask = np.ones(layer.kernel.shape)
        mask[1] = 0  # every layer ignores its input 1 (soft: a feature; the others: a unit)
        _set_mask(layer, mask)
    rows = {row["name"]: row for row in analysis.model_stats(model)["layers"]}
    assert rows["soft"]["no_outgoing_units"] is None  # softmax mixes its units
    assert rows["shown"]["no_outgoing_units"] is None  # its units are an output
    assert (rows["soft"]["dead_units"], rows["shown"]["dead_units"]) == (0, 0)


def test_model_stats_needs_masked_layers() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no masked layers"):
        analysis.model_stats(model)


def test_input_map_counts_per_pixel_and_sign() -> None:
    model = keras.Sequential(
        [keras.Input((2, 2, 1)), keras.layers.Flatten(), MaskedDense(3, use_bias=False)]
    )
    layer = model.layers[-1]
    mask = np.array([[1, 1, -1], [0, 0, 0], [0, -1, 0], [1, 0, 0]])  # rows = pixels (0,0)..(1,1)
    w0 = np.ones((4, 3))
    w0[0, 0] = -1
    _set_mask(layer, mask, w0)
    maps = analysis.input_map(model)
    assert maps["layer"] == layer.name and maps["units"] == 3
    np.testing.assert_array_equal(maps["remaining"], [[3, 0], [1, 1]])
    np.testing.assert_array_equal(maps["kept"], [[2, 0], [0, 1]])
    np.testing.assert_array_equal(maps["inverted"], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(maps["positive"], [[1, 0], [0, 1]])  # only (0,0)->unit 1
    np.testing.assert_array_equal(maps["negative"], [[2, 0], [1, 0]])


def test_input_map_is_none_for_a_conv_first_layer() -> None:
    model = keras.Sequential([keras.Input((4, 4, 1)), MaskedConv2D(2, 3)])
    assert analysis.input_map(model) is None


def test_conv_maps_known_answers() -> None:
    layer = MaskedConv2D(2, 3, use_bias=False)
    layer.build((None, 5, 5, 1))
    mask = np.zeros((3, 3, 1, 2))
    mask[1, 1, 0, :] = [1, -1]  # the centre is kept by both filters (one inverted)
    mask[0, 0, 0, 0] = 1
    _set_mask(layer, mask)
    maps = analysis.conv_maps(layer)
    np.testing.assert_allclose(maps["per_filter"], [2 / 9, 1 / 9])
    expected = np.zeros((3, 3))
    expected[1, 1], expected[0, 0] = 1.0, 0.5
    np.testing.assert_allclose(maps["per_position"], expected)
    assert maps["inverted_per_position"][1, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not a conv layer"):
        analysis.conv_maps(_built_dense())


def _built_dense() -> keras.layers.Layer:
    layer = MaskedDense(2)
    layer.build((None, 3))
    return layer


def test_mask_recorder_across_a_short_fit(tmp_path: Path) -> None:
    model = keras.Sequential(
        [keras.Input((6,)), MaskedDense(8, activation="elu"), MaskedDense(2, activation="softmax")]
    )
    model.compile(
        keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 2, 64)
    run_dir = tmp_path / "run"
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[analysis.MaskRecorder(run_dir)])
    path = run_dir / analysis.ANALYSIS_FILE
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert records == analysis.read_records(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[0]["changed"] is None and records[0]["logs"] == {}
    assert all(0 <= r["changed"] <= 1 for r in records[1:])
    assert {"loss", "accuracy"} <= set(records[-1]["logs"])
    # the last record against the final masks, counted here in numpy (not by model_stats)
    first, second = (_numpy_mask(layer) for layer in model.layers)
    total = first.size + second.size
    nonzero = np.count_nonzero(first) + np.count_nonzero(second)
    assert records[-1]["remaining"] == pytest.approx(nonzero / total)
    no_input_0 = ~(first != 0).any(axis=0)  # d0's units that receive nothing
    no_output_0 = ~(second != 0).any(axis=1)  # d0's units the output layer ignores
    no_input_1 = ~(second != 0).any(axis=0)
    expected = [
        (
            model.layers[0].name,
            first,
            int(np.sum(no_output_0)),
            int(np.sum(no_input_0 | no_output_0)),
        ),
        (model.layers[1].name, second, None, int(np.sum(no_input_1))),  # the output layer
    ]
    for row, (name, mask, no_outgoing_units, dead) in zip(
        records[-1]["layers"], expected, strict=True
    ):
        assert row["name"] == name
        assert (row["kept"], row["hidden"], row["inverted"]) == (
            int(np.sum(mask == 1)),
            int(np.sum(mask == 0)),
            int(np.sum(mask == -1)),
        )
        assert row["no_outgoing_units"] == no_outgoing_units
        assert row["dead_units"] == dead
    assert [p.name for p in run_dir.iterdir()] == [analysis.ANALYSIS_FILE]  # no temp files
    columns = analysis.flatten_records(records)
    assert columns["epoch"] == [0, 1, 2, 3]
    assert columns["loss"][0] is None and columns["loss"][-1] is not None
    assert len(columns[f"remaining/{model.layers[0].name}"]) == 4

    # a new (not resumed) fit starts the file over
    model.fit(x, y, epochs=1, verbose=0, callbacks=[analysis.MaskRecorder(run_dir)])
    assert [r["epoch"] for r in analysis.read_records(run_dir)] == [0, 1]


def test_read_records_missing_and_broken(tmp_path: Path) -> None:
    assert analysis.read_records(tmp_path) == []
    (tmp_path / analysis.ANALYSIS_FILE).write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        analysis.read_records(tmp_path)


def test_plotting_is_imported_lazily() -> None:
    """keras_ssm, its analysis, report and the `ssm report` parser never import the plotting
    module (or matplotlib, unless something else, e.g. a Keras utility, already did)."""
    code = (
        "import sys, keras;"
        "mpl = lambda: {m for m in sys.modules if m.split('.')[0] == 'matplotlib'};"
        "before = mpl();"
        "import keras_ssm, keras_ssm.analysis, keras_ssm.report, keras_ssm.cli;"
        "args = keras_ssm.cli.build_parser().parse_args(['report', 'runs/fcn']);"
        "assert args.command == 'report', args;"
        "assert 'keras_ssm.plots' not in sys.modules, 'keras_ssm.plots imported';"
        "assert mpl() == before, sorted(mpl() - before)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_mask_recorder_keeps_the_lines_of_a_resumed_run(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), MaskedDense(2)])
    path = tmp_path / analysis.ANALYSIS_FILE
    path.write_text("".join(json.dumps({"epoch": e, "layers": []}) + "\n" for e in range(5)))
    recorder = analysis.MaskRecorder(tmp_path)
    recorder.set_model(model)
    model._initial_epoch = 2  # what keras.callbacks.BackupAndRestore sets when it resumes
    recorder.on_train_begin()
    assert [r["epoch"] for r in analysis.read_records(tmp_path)] == [0, 1, 2]
    recorder.on_epoch_end(2, {"loss": 0.5})
    records = analysis.read_records(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[-1]["logs"] == {"loss": 0.5} and records[-1]["changed"] == 0.0


def test_doctests() -> None:
    import doctest

    results = doctest.testmod(analysis)
    assert results.attempted > 5 and results.failed == 0


def _two_mask_model() -> keras.Model:
    """A SeparableConv (two masks: depthwise and pointwise kernels) between one-mask layers."""
    from keras_ssm.layers_more import MaskedDepthwiseConv2D, MaskedSeparableConv2D

    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            MaskedConv2D(3, 1, name="c"),
            MaskedSeparableConv2D(4, 3, name="sep"),
            MaskedDepthwiseConv2D(3, name="dw"),
            keras.layers.Flatten(),
            MaskedDense(2, activation="softmax", name="out"),
        ]
    )


def test_layers_with_two_masks_get_one_row_each(tmp_path: Path) -> None:
    model = _two_mask_model()
    names = ["c", "sep/depthwise_kernel", "sep/pointwise_kernel", "dw", "out"]
    assert [name for name, _, _ in analysis.masked_weights(model)] == names
    stats = analysis.model_stats(model)
    assert [row["name"] for row in stats["layers"]] == names
    sep = model.get_layer("sep")
    parts = ["depthwise_kernel", "pointwise_kernel"]
    for row, weight in zip(stats["layers"][1:3], parts, strict=True):
        mask = keras.ops.convert_to_numpy(sep.compute_mask_values(training=False, weight=weight))
        assert row["total"] == mask.size and row["kept"] == int(np.sum(mask == 1))
        assert row["inverted"] == int(np.sum(mask == -1))
        assert analysis.conv_maps(sep, weight)["name"] == f"sep/{weight}"
    # the totals are mask_stats' (which counts a layer's masks together)
    assert stats["total"] == keras_ssm.mask_stats(model)["total"]
    assert stats["remaining"] == pytest.approx(keras_ssm.mask_stats(model)["remaining"])
    with pytest.raises(ValueError, match="pass weight="):
        analysis.layer_arrays(sep)

    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 2)).astype("float32"), rng.integers(0, 2, 16)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[analysis.MaskRecorder(tmp_path)])
    records = analysis.read_records(tmp_path)
    assert [row["name"] for row in records[-1]["layers"]] == names
    assert all(row["changed"] is not None for row in records[-1]["layers"])


def test_report_maps_every_conv_kernel_of_a_two_mask_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from keras_ssm import cli

    run = tmp_path / "sep_run"
    run.mkdir()
    model = _two_mask_model()
    model.save(run / "model.keras")
    (run / "metrics.json").write_text(json.dumps({"model": "custom", "mask": "signed"}))
    assert cli.main(["report", str(run), "--out", str(tmp_path / "report"), "--no-data"]) == 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "conv_maps.png" in page and "scores.png" in page
