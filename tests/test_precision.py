"""Mixed precision: the mask trained under ``mixed_bfloat16`` is bit for bit the one ``fold`` and
``mask_stats`` see, and nothing deployed (fold, compact, exports) keeps the training policy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm.layers import MaskedConv2D, MaskedDense
from keras_ssm.training import precision

pytestmark = pytest.mark.core


@pytest.fixture
def bf16() -> None:
    with precision.policy_scope("bfloat16"):
        yield


def _boundary_scores(tau: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scores at and one float32 step around +-tau (bfloat16 rounds all of them to the same
    value, so a mask computed from bfloat16 copies would get some of them wrong)."""
    t = np.float32(tau)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    values = np.array(
        [
            t,
            np.nextafter(t, up),
            np.nextafter(t, down),
            -t,
            np.nextafter(-t, down),
            np.nextafter(-t, up),
            0.0,
            2 * t,
        ],
        dtype=np.float32,
    )
    return np.resize(values, shape).astype(np.float32)


def _expected_mask(scores: np.ndarray, tau: float) -> np.ndarray:
    t = np.float32(tau)
    return (scores > t).astype(np.float32) - (scores < -t).astype(np.float32)


def test_mask_in_a_bfloat16_call_is_the_float32_mask(bf16: None) -> None:
    layer = MaskedDense(8, use_bias=False)
    layer.build((None, 8))
    assert layer.compute_dtype == "bfloat16" and layer.scores.dtype == "float32"
    tau = float(keras.ops.convert_to_numpy(layer.mask_state["tau"]))
    scores = _boundary_scores(tau, (8, 8))
    layer.scores.assign(scores)
    # identity input: the output rows are the kernel the call used, in bfloat16
    out = keras.ops.convert_to_numpy(layer(np.eye(8, dtype="float32"))).astype(np.float32)
    w0 = keras.ops.convert_to_numpy(layer.w0)
    want = _expected_mask(scores, tau)
    np.testing.assert_array_equal(np.sign(out), want * np.sign(w0))
    # ... and it is the mask that fold and mask_stats see
    folded = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_array_equal(folded, w0 * want)
    assert folded.dtype == np.float32


def test_gradients_reach_the_float32_scores(bf16: None) -> None:
    layer = MaskedConv2D(4, 3, padding="same", use_bias=False)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    layer(x)
    from conftest import layer_grads

    grads = layer_grads(layer, x, lambda y: keras.ops.sum(keras.ops.cast(y, "float32") ** 2))
    (g,) = grads.values()
    assert g.dtype == np.float32 and np.abs(g).sum() > 0


def _tiny_bf16_model() -> keras.Model:
    with precision.policy_scope("bfloat16"):
        inputs = keras.Input((6, 6, 1))
        x = MaskedConv2D(4, 3, activation="elu", use_bias=False)(inputs)
        x = keras.layers.Flatten()(x)
        outputs = MaskedDense(3, activation="softmax", use_bias=False)(x)
        return keras.Model(inputs, outputs)


def test_fold_and_to_float32_compute_in_float32() -> None:
    model = _tiny_bf16_model()
    assert model.layers[1].compute_dtype == "bfloat16"
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 1)).astype("float32")
    folded, plain = keras_ssm.fold(model), keras_ssm.wrap.to_float32(model)
    for m in (folded, plain):
        assert all(layer.compute_dtype == "float32" for layer in m.layers)
        assert keras.ops.convert_to_numpy(m(x)).dtype == np.float32
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x)), keras.ops.convert_to_numpy(plain(x)), rtol=1e-6
    )
    for layer, masked in zip(folded.layers[1:], model.layers[1:], strict=True):
        if hasattr(masked, "w0"):  # exact float32 w0 * M, not a bfloat16 rounding of it
            want = keras.ops.convert_to_numpy(masked.w0) * keras.ops.convert_to_numpy(
                masked.compute_mask_values()
            )
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), want)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export needs TF")
def test_a_bfloat16_trained_model_exports_float32(tmp_path) -> None:
    from keras_ssm.export import export_model, load_compact

    model = _tiny_bf16_model()
    manifest = export_model(model, tmp_path / "out", "onnx,compact")
    assert manifest["fold_max_rel_error"] <= 1e-6
    reloaded = load_compact(tmp_path / "out" / "model.ssm")
    assert all(layer.compute_dtype == "float32" for layer in reloaded.layers)


def test_resolve_precision_and_jit(tmp_path) -> None:
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="allowed: auto, float32, bfloat16"):
        precision.resolve_precision("fp16")
    assert precision.resolve_jit(None) == "auto" and precision.resolve_jit(True) is True
    with pytest.raises(ValueError, match="Unknown jit"):
        precision.resolve_jit("yes")
    # a model without convolutions never trains in bfloat16 by default (it is not faster)
    assert precision.resolve_precision("auto", convolutional=False) == "float32"
    assert precision.resolve_precision("bfloat16", convolutional=False) == "bfloat16"
    assert precision.resolve_jit(False, convolutional=False) is False
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert precision.cpu_has_bf16(flags)
    assert precision.cpu_has_amx(flags)
    flags.write_text("processor: 0\nflags\t\t: fpu sse avx2\n")
    assert not precision.cpu_has_bf16(flags) and not precision.cpu_has_amx(flags)
    assert not precision.cpu_has_bf16(tmp_path / "missing")
    # AVX512-BF16 without AMX (AMD Zen 4): bfloat16 instructions (oneDNN's avx512_core_bf16)
    flags.write_text("processor: 0\nmodel name\t: AMD EPYC\nflags\t\t: avx512f avx512_bf16\n")
    assert precision.cpu_has_bf16(flags) and not precision.cpu_has_amx(flags)
    described = precision.cpu_description(flags)
    assert "AMD EPYC" in described and described.endswith("; avx512_bf16)")


def test_policy_scope_restores_the_policy() -> None:
    before = keras.config.dtype_policy().name
    with precision.policy_scope("bfloat16") as name:
        assert name == "mixed_bfloat16" == keras.config.dtype_policy().name
    assert keras.config.dtype_policy().name == before


def test_auto_picks_per_model_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with bfloat16 instructions (AMX, or AVX512-BF16 alone as on AMD Zen 4):
    convnets train in bfloat16 without XLA; the FCN in float32 with XLA on TensorFlow (measured
    fastest, examples/bench_train.py); on a CPU without them, float32."""
    tf = keras.backend.backend() == "tensorflow"
    monkeypatch.setattr(precision, "_accelerated", lambda: False)
    for amx in (True, False):  # AVX512-BF16 with and without AMX
        monkeypatch.setattr(precision, "cpu_has_amx", lambda *a, amx=amx: amx)
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: True)
        assert precision.resolve_precision("auto", convolutional=True) == (
            "bfloat16" if tf else "float32"
        )
        assert precision.resolve_precision("auto", convolutional=False) == "float32"
    monkeypatch.setattr(precision, "cpu_has_amx", lambda *a: False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: False)  # AVX2, AVX512F only
    assert precision.resolve_precision("auto", convolutional=True) == "float32"
    assert precision.resolve_jit("auto", convolutional=True) == "auto"
    assert precision.resolve_jit("auto", convolutional=False) == (True if tf else "auto")
    monkeypatch.setattr(precision, "_accelerated", lambda: True)  # a GPU: Keras decides
    assert precision.resolve_jit("auto", convolutional=False) == "auto"
    assert precision.resolve_precision("auto", convolutional=True) == "float32"
