"""MirroredStrategy over two logical CPU devices trains like one device (TensorFlow only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

pytestmark = [
    pytest.mark.core,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute only"),
]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras, keras_ssm

    def run(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = keras.Sequential([
                keras.Input((6, 6, 2)),
                keras_ssm.layers.MaskedConv2D(4, 3, activation="elu", use_bias=False),
                keras.layers.Flatten(),
                keras_ssm.layers.MaskedDense(3, activation="softmax", use_bias=False),
            ])
            opt = keras.optimizers.SGD(0.5, momentum=0.9)
            model.compile(opt, "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 6, 6, 2)).astype("float32")
        y = rng.integers(0, 3, 64)
        hist = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        scores = [layer.scores.numpy() for layer in model.layers if hasattr(layer, "scores")]
        masks = [keras.ops.convert_to_numpy(l.compute_mask_values()) for l in model.layers
                 if hasattr(l, "scores")]
        return hist.history["loss"], scores, masks

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    loss_m, scores_m, masks_m = run(mirrored)
    loss_1, scores_1, masks_1 = run(tf.distribute.get_strategy())
    print(json.dumps({
        "loss_diff": float(np.max(np.abs(np.array(loss_m) - np.array(loss_1)))),
        "score_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(scores_m, scores_1)),
        "masks_equal": all(np.array_equal(a, b) for a, b in zip(masks_m, masks_1)),
        "loss_moved": loss_m[0] != loss_m[-1],
    }))
    """
)


def test_mirrored_strategy_matches_one_device() -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loss_moved"]
    assert result["loss_diff"] < 1e-5, result
    assert result["score_diff"] < 1e-5, result
    assert result["masks_equal"], result
