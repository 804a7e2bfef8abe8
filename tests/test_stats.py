"""mask_stats, summary and the training callback, on hand-built masks with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm.layers import MaskedDense
from keras_ssm.stats import sign_counts, ternary_entropy_bits, with_totals

pytestmark = pytest.mark.core


def _hand_built() -> keras.Model:
    """Two layers with scores set so the masks are known: tau = 0.5 * 1.0 in both."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            MaskedDense(5, use_bias=False, threshold=0.5, name="a"),
            MaskedDense(2, use_bias=False, threshold=0.5, name="b"),
        ]
    )
    a = np.zeros((4, 5), "float32")
    a[0, :3] = 1.0  # 3 kept
    a[1, :2] = -0.9  # 2 inverted
    b = np.array([[0.9, 0.1], [-0.7, -0.2], [0.0, 0.3], [0.4, 0.6], [-0.6, 0.2]], "float32")
    for layer, scores in ((model.layers[0], a), (model.layers[1], b)):
        layer.scores.assign(scores)
        layer.mask_state["tau"].assign(0.5)
    return model


def _numpy_mask(layer: keras.layers.Layer) -> np.ndarray:
    """The signed mask M = +1 if s > tau, -1 if s < -tau, else 0, computed here in numpy."""
    scores = keras.ops.convert_to_numpy(layer.scores)
    tau = keras.ops.convert_to_numpy(layer.mask_state["tau"])
    return (scores > tau).astype(int) - (scores < -tau).astype(int)


def test_sign_counts_known_answers() -> None:
    counts = sign_counts(np.array([[1, 0, -1, -1], [0, 0, 1, 0]]))
    assert counts == {
        "total": 8,
        "kept": 2,
        "inverted": 2,
        "hidden": 4,
        "remaining": 0.5,
        "flipped": 0.5,
    }
    assert sign_counts(np.zeros((2, 3)))["flipped"] == 0.0  # nothing remains: no division


def test_with_totals_sums_rows() -> None:
    rows = [
        {"total": 10, "kept": 1, "inverted": 3, "hidden": 6, "remaining": 0.4},
        {"total": 6, "kept": 2, "inverted": 0, "hidden": 4, "remaining": 2 / 6},
    ]
    totals = with_totals(rows)
    assert totals["layers"] is rows
    assert (totals["total"], totals["kept"], totals["inverted"], totals["hidden"]) == (16, 3, 3, 10)
    assert totals["remaining"] == pytest.approx(6 / 16)
    assert totals["flipped"] == pytest.approx(3 / 6)


def test_mask_stats_counts_known_masks() -> None:
    stats = keras_ssm.mask_stats(_hand_built())
    rows = {row["name"]: row for row in stats["layers"]}
    assert rows["a"] == {
        "name": "a",
        "class": "MaskedDense",
        "total": 20,
        "kept": 3,
        "inverted": 2,
        "hidden": 15,
        "remaining": 0.25,
    }
    assert (rows["b"]["kept"], rows["b"]["inverted"], rows["b"]["hidden"]) == (2, 2, 6)
    assert (stats["total"], stats["kept"], stats["inverted"], stats["hidden"]) == (30, 5, 4, 21)
    assert stats["remaining"] == pytest.approx(9 / 30)
    assert stats["flipped"] == pytest.approx(4 / 9)


def test_mask_stats_needs_masked_layers() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no masked layers"):
        keras_ssm.mask_stats(model)


def test_entropy_bits() -> None:
    assert ternary_entropy_bits(5, 5, 10) == pytest.approx(20 * 1.5)
    assert ternary_entropy_bits(0, 0, 7) == 0.0
    assert ternary_entropy_bits(1, 0, 3) == pytest.approx(
        4 * -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    )


def test_summary_table_lists_layers_and_totals() -> None:
    lines: list[str] = []
    text = keras_ssm.summary(_hand_built(), print_fn=lines.append)
    assert lines == [text]
    assert "Total" in text and "30.00%" in text  # 9 of 30 remain
    row_a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "25.00%" in row_a and "10.00%" in row_a  # remaining, inverted
    # 20 entries at entropy + 32 bits of scale, against 20 * 32 bits of fp32
    bits = ternary_entropy_bits(3, 2, 15) + 32
    assert f"{20 * 32 / bits:.1f}x" in row_a


def test_callback_logs_remaining_and_flipped_into_history_and_tensorboard(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="elu"), MaskedDense(2)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    callbacks = [keras_ssm.MaskStatsCallback(per_layer=True)]
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tmp_path)))
    history = model.fit(x, x[:, :2], epochs=3, verbose=0, callbacks=callbacks)
    assert len(history.history["remaining"]) == 3
    # the masks after the last epoch, from the signed-mask rule written out in numpy
    masks = {layer.name: _numpy_mask(layer) for layer in model.layers}
    total = sum(m.size for m in masks.values())
    nonzero = sum(int(np.count_nonzero(m)) for m in masks.values())
    inverted = sum(int(np.sum(m == -1)) for m in masks.values())
    assert 0 < nonzero < total and 0 < inverted < nonzero  # a test that can tell them apart
    assert history.history["remaining"][-1] == pytest.approx(nonzero / total)
    assert history.history["flipped"][-1] == pytest.approx(inverted / nonzero)
    assert all(0 <= v <= 1 for v in history.history["flipped"])
    for name, mask in masks.items():
        assert history.history[f"remaining/{name}"][-1] == pytest.approx(
            np.count_nonzero(mask) / mask.size
        )
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tags = set()
        for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                tags.update(value.tag for value in event.summary.value)
        assert {"epoch_remaining", "epoch_flipped"} <= tags
