"""mask_stats, summary and the training callback, on hand-built masks with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm.layers import MaskedDense
from keras_ssm.stats import ternary_entropy_bits

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
    assert history.history["remaining"][-1] == pytest.approx(
        keras_ssm.mask_stats(model)["remaining"]
    )
    assert all(0 <= v <= 1 for v in history.history["flipped"])
    assert f"remaining/{model.layers[0].name}" in history.history
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tags = set()
        for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                tags.update(value.tag for value in event.summary.value)
        assert {"epoch_remaining", "epoch_flipped"} <= tags
