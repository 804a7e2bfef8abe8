"""crop_inputs: the image border the first Dense layer never reads becomes a Cropping2D (one
Slice in ONNX), with the same outputs, through every export format."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssm.export.crop import crop_inputs

L = keras.layers


def _fcn(sequential: bool) -> keras.Model:
    layers = [L.Flatten(name="flat"), L.Dense(16, activation="elu", name="d1"), L.Dense(4)]
    if sequential:
        return keras.Sequential([keras.Input((10, 8, 2)), *layers])
    inputs = keras.Input((10, 8, 2), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _hide_border(model: keras.Model, rows: slice, cols: slice) -> np.ndarray:
    dense = model.get_layer("d1")
    kernel, bias = dense.get_weights()
    read = np.zeros((10, 8, 2), bool)
    read[rows, cols, :] = True
    read[rows.start + 1, cols.start + 1, :] = False  # an unread pixel inside the box stays
    kernel[~read.reshape(-1)] = 0.0
    dense.set_weights([kernel, bias + 0.1])
    return read


@pytest.mark.parametrize("sequential", [False, True])
def test_crop_keeps_the_outputs(sequential: bool) -> None:
    keras.utils.set_random_seed(0)
    model = _fcn(sequential)
    read = _hide_border(model, slice(2, 7), slice(1, 5))
    cropped, report = crop_inputs(model)
    assert report.box == ((2, 3), (1, 3))
    assert report.features_before == 160 and report.features_after == 5 * 4 * 2
    assert report.features_read == int(read.sum()) == 40 - 2
    kinds = [type(la).__name__ for la in cropped.layers]
    assert kinds[:3] == ["InputLayer", "Cropping2D", "Flatten"]
    assert cropped.inputs[0].shape[1:] == (10, 8, 2)
    x = np.random.default_rng(1).normal(size=(5, 10, 8, 2)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x))
    got = keras.ops.convert_to_numpy(cropped(x))
    assert np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))
    assert "cropped" in str(report)


def test_a_large_box_is_not_cropped() -> None:
    """A box holding more than ``max_kept`` of the features stays (its zero rows instead of
    the strided copy a crop costs); the default crops any unread border."""
    model = _fcn(False)
    _hide_border(model, slice(1, 9), slice(1, 7))  # 8 x 6 of 10 x 8 pixels: 60%
    same, report = crop_inputs(model, max_kept=0.4)
    assert same is model and report.box is None
    assert report.box_features == 96 and report.features_after == report.features_before == 160
    assert "not cropped" in str(report) and "96 of 160" in str(report)
    cropped, report = crop_inputs(model)
    assert report.box == ((1, 1), (1, 1)) and report.features_after == 96
    assert crop_inputs(model, max_kept=0.6)[1].box is not None  # 96 <= 0.6 * 160


def test_an_earlier_crop_is_kept_tightened_or_taken_out() -> None:
    """A model that already crops (a compact .ssm saved after an export) is measured over the
    whole image: the same box keeps the model, a tighter one replaces the crop, and a
    ``max_kept`` the box exceeds takes the crop out; the outputs never change."""
    keras.utils.set_random_seed(0)
    model = _fcn(False)
    _hide_border(model, slice(2, 7), slice(1, 5))
    x = np.random.default_rng(2).normal(size=(5, 10, 8, 2)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x))

    def same_outputs(m: keras.Model) -> bool:
        got = keras.ops.convert_to_numpy(m(x))
        return bool(np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want)))

    cropped, _ = crop_inputs(model)
    again, report = crop_inputs(cropped)
    assert again is cropped and report.box == ((2, 3), (1, 3))
    assert (report.features_before, report.features_after) == (160, 40)
    assert "cropped ((2, 3), (1, 3))" in str(report)
    loose, _ = crop_inputs(model, max_kept=1.0)  # now cut a looser box by hand: one more row
    d1 = loose.get_layer("d1")
    kernel, bias = d1.get_weights()
    wider = keras.Sequential(
        [
            keras.Input((10, 8, 2)),
            L.Cropping2D(((1, 3), (1, 3))),
            L.Flatten(name="flat"),
            L.Dense(16, activation="elu", name="d1"),
            loose.layers[-1].__class__.from_config(loose.layers[-1].get_config()),
        ]
    )
    padded = np.zeros((6 * 4 * 2, 16), "float32")
    padded[4 * 2 :] = kernel  # the extra top row is unread
    wider.get_layer("d1").set_weights([padded, bias])
    wider.layers[-1].set_weights(loose.layers[-1].get_weights())
    assert same_outputs(wider)
    tight, report = crop_inputs(wider)
    assert report.box == ((2, 3), (1, 3)) and same_outputs(tight)
    assert [type(la).__name__ for la in tight.layers].count("Cropping2D") == 1
    assert tight.get_layer("d1").get_weights()[0].shape == (40, 16)
    uncropped, report = crop_inputs(cropped, max_kept=0.2)  # 40 of 160 is more than 20%
    assert report.box is None and "not cropped" in str(report) and same_outputs(uncropped)
    assert "Cropping2D" not in [type(la).__name__ for la in uncropped.layers]
    assert uncropped.get_layer("d1").get_weights()[0].shape == (160, 16)


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "half", None])
def test_max_kept_must_be_a_fraction(bad) -> None:
    with pytest.raises(ValueError, match="max_kept must be a fraction"):
        crop_inputs(_fcn(False), max_kept=bad)


def test_nothing_to_crop() -> None:
    model = _fcn(False)
    same, report = crop_inputs(model)
    assert report.box is None and same is model and "nothing to crop" in str(report)
    conv = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(2)])
    conv_report = crop_inputs(conv)[1]
    assert conv_report.box is None  # only the Flatten -> Dense pattern is cropped
    assert "does not feed a Flatten -> Dense" in str(conv_report)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX/LiteRT need TF")
def test_crop_exports_as_a_slice(tmp_path) -> None:
    import onnx

    from keras_ssm.export import export_model

    keras.utils.set_random_seed(0)
    model = _fcn(False)
    _hide_border(model, slice(2, 7), slice(1, 5))
    manifest = export_model(model, tmp_path / "out", "onnx,litert,compact", shrink=True)
    assert tuple(map(tuple, manifest["crop"]["box"])) == ((2, 3), (1, 3))
    assert manifest["shrink_max_rel_error"] <= 1e-6
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    assert "Slice" in ops and "Gather" not in ops
