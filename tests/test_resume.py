"""`ssm train --resume`: SIGKILL mid-epoch, restart, and end with bit-identical masks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import write_mnist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="CPU determinism via TF"),
]

EPOCHS = 5


def _train(data: Path, out: Path) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "keras_ssm.cli",
        "train",
        "--model",
        "fcn",
        "--epochs",
        str(EPOCHS),
        "--deterministic",
        "--resume",
        "--verbose",
        "0",
        "--out",
        str(out),
    ]
    env = {
        **os.environ,
        "KERAS_SSM_DATA_DIR": str(data),
        "KERAS_SSM_OFFLINE": "1",
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _scores(run: Path) -> list[np.ndarray]:
    import keras_ssm  # noqa: F401

    model = keras.saving.load_model(run / "model.keras")
    return [
        keras.ops.convert_to_numpy(layer.scores)
        for layer in model.layers
        if hasattr(layer, "scores")
    ]


def test_killed_run_resumes_to_the_same_masks(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", n_train=12000, n_test=256)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    proc = _train(data, resumed)
    metadata = resumed / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metadata.is_file() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2:
            time.sleep(0.3)  # well inside the third epoch
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (resumed / "model.keras").exists()
    assert (resumed / "backup").is_dir()

    for run in (resumed, reference):  # restart the killed one; run the reference uninterrupted
        proc = _train(data, run)
        output = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, output[-3000:]
        assert ("over all sessions" in output) is (run == resumed), output[-3000:]

    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["epochs"] == EPOCHS
    # the training time covers the killed session's epochs too, not only the last session's
    from keras_ssm.run_dir import RunDir

    epoch_times = RunDir(resumed).read_history()["epoch_time_s"]
    assert len(epoch_times) == EPOCHS and min(epoch_times) > 0
    assert metrics["train_time_s"] == pytest.approx(sum(epoch_times), abs=0.02)
    n_images = metrics["images_per_s"] * metrics["train_time_s"] / EPOCHS
    assert n_images == pytest.approx(12000, rel=0.01)
    assert not (resumed / "backup").exists()  # removed when the run completes
    for a, b in zip(_scores(resumed), _scores(reference), strict=True):
        np.testing.assert_array_equal(a, b)
