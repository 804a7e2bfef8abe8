"""export/tfmot_baseline.py: the TF-MOT baseline of the benchmark (its own process, tf_keras)
trains the signed run's architecture to the signed run's per-layer sparsity and exports files
that match tf_keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.fixtures import write_mnist

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF-MOT runs on TensorFlow (tf_keras)"
)


@pytest.mark.parametrize("model", ["fcn", "conv2"])
def test_tfmot_baseline_reaches_the_signed_runs_sparsity(model, tmp_path) -> None:
    import onnxruntime as ort

    data = write_mnist(tmp_path / "data", n_train=256, n_test=64)
    names = ["dense1", "dense2", "output"]
    if model != "fcn":
        names = ["conv1", "conv2", *names]
    remaining = dict(zip(names, [0.5, 0.2, 0.1, 0.05, 0.3][: len(names)], strict=True))
    signed = tmp_path / "signed"
    signed.mkdir()
    metrics = {
        "model": model,
        "dataset": "mnist",
        "epochs": 1,
        "remaining": 0.1,
        "layers": [{"name": k, "remaining": v} for k, v in remaining.items()],
    }
    (signed / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "tfmot"
    env = {**os.environ, "KERAS_SSM_DATA_DIR": str(data), "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = str(ROOT / "export" / "tfmot_baseline.py")
    cmd = [sys.executable, script, "--signed-run", str(signed), "--out", str(out)]
    cmd += ["--frequency", "1", "--precision", "float32"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((out / "metrics.json").read_text())
    assert got["model"] == model and got["precision"] == "float32"
    assert set(got["reached_sparsity"]) == set(names)
    for name, kept in remaining.items():  # pruned to the signed run's sparsity, layer by layer
        assert got["reached_sparsity"][name] == pytest.approx(1 - kept, abs=0.01)
    assert got["sparsity_shortfall"] == {}  # float32: no layer short of its target
    assert got["max_rel_error"]["onnx"] <= 1e-4 and got["max_rel_error"]["tflite"] <= 1e-4
    # the pruned kernels are what the ONNX file holds: zeros where TF-MOT pruned
    sess = ort.InferenceSession(str(out / "model.onnx"))
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (2, 10)
    import onnx

    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("Gemm") == 3 and "MatMul" not in ops  # Dense layers as Gemm, as ours
    assert (out / "model.tflite").stat().st_size > 0
    # a second run refuses to overwrite without --force
    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--force" in again.stderr


def _signed_metrics(folder: Path, model: str, remaining: dict[str, float]) -> Path:
    folder.mkdir()
    metrics = {"model": model, "dataset": "mnist", "epochs": 1, "remaining": 0.1,
               "layers": [{"name": k, "remaining": v} for k, v in remaining.items()]}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_tfmot_baseline_from_dense_prunes_the_trained_weights(tmp_path) -> None:
    """--from-dense starts from the dense run's weights: at learning rate 0 and no weight decay,
    what survives is exactly the dense kernels' largest magnitudes, at the target sparsity."""
    import keras_ssm

    data = write_mnist(tmp_path / "data", n_train=256, n_test=64)
    remaining = {"dense1": 0.2, "dense2": 0.1, "output": 0.5}
    signed = _signed_metrics(tmp_path / "signed", "fcn", remaining)
    dense_run = tmp_path / "dense"
    dense_run.mkdir()
    keras.utils.set_random_seed(3)
    dense = keras_ssm.models.get("fcn", mask=None)
    dense.save(dense_run / "model.keras")
    (dense_run / "metrics.json").write_text(
        json.dumps({"model": "fcn", "mask": "none", "epochs": 50, "test_accuracy": 0.5})
    )
    out = tmp_path / "tfmot"
    env = {**os.environ, "KERAS_SSM_DATA_DIR": str(data), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "export" / "tfmot_baseline.py"), "--signed-run",
           str(signed), "--out", str(out), "--from-dense", str(dense_run), "--epochs", "2",
           "--lr", "0", "--weight-decay", "0", "--frequency", "1",
           "--precision", "float32"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((out / "metrics.json").read_text())
    assert got["from_dense"] == {"run": str(dense_run), "epochs": 50, "test_accuracy": 0.5}
    assert got["epochs"] == 2
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(out / "model.onnx")).graph
    stored = [numpy_helper.to_array(t) for t in graph.initializer]
    for name, kept in remaining.items():
        kernel = np.asarray(dense.get_layer(name).kernel)
        (pruned,) = [w for w in stored if w.shape == kernel.shape]
        nonzero = pruned != 0
        assert nonzero.mean() == pytest.approx(kept, abs=0.01)
        np.testing.assert_array_equal(pruned[nonzero], kernel[nonzero])  # the trained weights
        assert np.abs(kernel[nonzero]).min() >= np.abs(kernel[~nonzero]).max()  # by magnitude

    # not a dense run of this model: refused before anything is trained
    bad_cmd = [*cmd[:5], str(tmp_path / "other"), "--from-dense", str(signed)]
    bad = subprocess.run(bad_cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--from-dense" in bad.stderr and "no model.keras" in bad.stderr


@pytest.mark.slow
def test_tfmot_baseline_resumes_after_a_kill(tmp_path) -> None:
    """Killed mid-training, the same command continues from the last finished epoch (weights,
    optimizer and pruning step restored), so the sparsity ramp still ends at the target."""
    import signal

    data = write_mnist(tmp_path / "data", n_train=6000, n_test=64)
    epochs, remaining = 6, {"dense1": 0.1, "dense2": 0.2, "output": 0.5}
    signed = tmp_path / "signed"
    signed.mkdir()
    metrics = {"model": "fcn", "dataset": "mnist", "epochs": epochs, "remaining": 0.1,
               "layers": [{"name": k, "remaining": v} for k, v in remaining.items()]}  # fmt: skip
    (signed / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "tfmot"
    env = {**os.environ, "KERAS_SSM_DATA_DIR": str(data), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "export" / "tfmot_baseline.py"), "--signed-run",
           str(signed), "--out", str(out), "--precision", "float32", "--frequency", "1",
           "--prune-fraction", "0.9"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = []
    for line in proc.stdout:  # epochs 1 and 2 are backed up once epoch 3 starts
        seen.append(line)
        if line.startswith(f"Epoch 3/{epochs}"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert not (out / "metrics.json").exists() and (out / "backup").is_dir()

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and f"Epoch 1/{epochs}" not in again.stdout
    got = json.loads((out / "metrics.json").read_text())
    assert got["resumed"] is True and got["epochs"] == epochs
    assert not (out / "backup").exists()  # removed when training completes
    for name, kept in remaining.items():  # the ramp went on from the restored pruning step
        assert got["reached_sparsity"][name] == pytest.approx(1 - kept, abs=0.01)
