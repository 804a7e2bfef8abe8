"""The fastest correct numeric path for training on the machine at hand.

Measured on the project's CPU (Intel Xeon with AMX and AVX512-BF16, TensorFlow 2.21,
``examples/bench_train.py``; see the README's training-speed table): TensorFlow's oneDNN runs
``mixed_bfloat16`` convolutions and matmuls on AMX, ~2.4x faster than float32, while XLA on a CPU
uses neither oneDNN nor AMX and is the slowest path.  Hence the defaults:

- precision ``"auto"``: ``"bfloat16"`` (Keras' ``mixed_bfloat16`` policy: variables, scores,
  threshold and optimizer state in float32, layer math in bfloat16) for a convolutional model on
  TensorFlow with a CPU that has AMX or AVX512-BF16; ``"float32"`` everywhere else.
- jit ``"auto"``: Keras' own choice (on TensorFlow with only a CPU: no XLA; JAX always compiles),
  except for a model without convolutions (the FCN) on a TensorFlow CPU: XLA, which fuses the
  mask's elementwise work into the step (measured: FCN signed 6.6 ms/step in float32 with XLA,
  9.0 without, 9.1 in bfloat16; masked/dense 0.99 with XLA).

>>> from keras_ssm.training import precision
>>> precision.resolve_precision("float32")
'float32'
>>> precision.policy_name("bfloat16")
'mixed_bfloat16'
>>> precision.resolve_jit(False)
False
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras

__all__ = [
    "PRECISIONS",
    "cpu_has_bf16",
    "policy_name",
    "policy_scope",
    "resolve_jit",
    "resolve_precision",
]

PRECISIONS = ("auto", "float32", "bfloat16")
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU runs bfloat16 math natively (AMX or AVX512-BF16 in ``/proc/cpuinfo``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(flag in flags for flag in _BF16_FLAGS)
    return False


def _accelerated() -> bool:
    """Whether Keras' backend computes on a GPU/TPU rather than the CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    return False


def resolve_precision(precision: str = "auto", *, convolutional: bool = True) -> str:
    """``"float32"`` or ``"bfloat16"`` for ``precision`` (one of :data:`PRECISIONS`);
    ``convolutional`` says whether the model has convolutions (bfloat16 wins only there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    fast_bf16 = keras.backend.backend() == "tensorflow" and not _accelerated() and cpu_has_bf16()
    return "bfloat16" if fast_bf16 and convolutional else "float32"


def policy_name(precision: str) -> str:
    """The Keras dtype policy that trains at ``precision`` (``"float32"`` or ``"bfloat16"``)."""
    names = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
    if precision not in names:
        raise ValueError(f"Unknown precision {precision!r}; allowed: float32, bfloat16.")
    return names[precision]


def resolve_jit(jit: bool | str | None = "auto", *, convolutional: bool = True) -> bool | str:
    """``model.compile``'s ``jit_compile`` for ``jit``: ``True``/``False`` force XLA on/off;
    ``"auto"`` or ``None`` leave it to Keras (no XLA on a TensorFlow CPU, where oneDNN wins),
    except for a model without convolutions on a TensorFlow CPU, where XLA wins (``True``)."""
    if jit is None or jit == "auto":
        cpu_tf = keras.backend.backend() == "tensorflow" and not _accelerated()
        return True if cpu_tf and not convolutional else "auto"
    if isinstance(jit, bool):
        return jit
    raise ValueError(f"Unknown jit setting {jit!r}; allowed: True, False, 'auto'.")


@contextlib.contextmanager
def policy_scope(precision: str) -> Iterator[str]:
    """Set Keras' global dtype policy for ``precision`` while models are built and trained;
    the previous policy comes back on exit."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name(precision))
    try:
        yield policy_name(precision)
    finally:
        keras.config.set_dtype_policy(previous)
