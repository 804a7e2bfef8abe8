"""`ssm train --strategy multiworker`: two worker processes on 127.0.0.1 equal one worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import write_mnist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute only"),
]

# float32: the comparison is of the distribution (in bfloat16 the per-worker split of the global
# batch rounds differently, ~1e-3 on the scores).
TRAIN = ["train", "--model", "fcn", "--epochs", "2", "--verbose", "2", "--deterministic"]
TRAIN += ["--precision", "float32"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _masked(run: Path) -> list:
    import keras_ssm  # noqa: F401

    model = keras.saving.load_model(run / "model.keras")
    layers = [layer for layer in model.layers if hasattr(layer, "scores")]
    return [
        (
            keras.ops.convert_to_numpy(layer.scores),
            keras.ops.convert_to_numpy(layer.compute_mask_values()),
        )
        for layer in layers
    ]


def test_two_workers_match_one_worker_with_the_same_global_batch(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", n_train=2048, n_test=256)
    env = {
        **os.environ,
        "KERAS_SSM_DATA_DIR": str(data),
        "KERAS_SSM_OFFLINE": "1",
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    workers = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "keras_ssm.cli",
                        *TRAIN,
                        "--strategy",
                        "multiworker",
                        "--out",
                        str(tmp_path / f"worker{index}"),
                    ],
                    env={**env, "TF_CONFIG": json.dumps(tf_config)},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        outputs = [worker.communicate(timeout=240)[0].decode() for worker in workers]
    finally:
        for worker in workers:  # never leave a worker behind, whatever happened
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "keras_ssm.cli", *TRAIN, "--out", str(tmp_path / "single")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stdout[-3000:]

    reference = _masked(tmp_path / "single")
    for index in range(2):
        for (scores, mask), (ref_scores, ref_mask) in zip(
            _masked(tmp_path / f"worker{index}"), reference, strict=True
        ):
            # Gradients are all-reduced in another order: float rounding only.
            np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(mask, ref_mask)
