"""The fastest correct numeric path for training on the machine at hand.

Measured on the project's CPU (Intel Xeon with AMX and AVX512-BF16, TensorFlow 2.21,
``examples/bench_train.py``; see the README's training-speed table): TensorFlow's oneDNN runs
``mixed_bfloat16`` convolutions and matmuls on AMX, ~2.4x faster than float32, while XLA on a CPU
uses neither oneDNN nor AMX and is the slowest path.  Hence the defaults:

- precision ``"auto"``: ``"bfloat16"`` (Keras' ``mixed_bfloat16`` policy: variables, scores,
  threshold and optimizer state in float32, layer math in bfloat16) for a convolutional model on
  TensorFlow with a CPU that has bfloat16 instructions (AMX or AVX512-BF16); ``"float32"``
  everywhere else.  On AMX, bfloat16 Conv6 steps take 0.25x the float32 ones.  On an AMD EPYC
  (Zen 4: AVX512-BF16, no AMX, 2 cores) oneDNN runs bfloat16 convolutions with its
  ``avx512_core_bf16`` kernels (``ONEDNN_VERBOSE=1``).  Step times on that VM jump between a few
  values, so one run proves little; over four interleaved runs of ``examples/bench_train.py``
  (``examples/results/precision_epyc/``), bfloat16 over float32 step time, dense and signed,
  was 0.45-1.11 for Conv6, 0.56-1.05 for Conv4, 0.61-1.12 for Conv2, 0.65-0.68 for Conv8 and
  1.00 for ResNet20: median 0.86, above 1 in 6 of 24 pairs and never by more than 12% (an
  earlier day's Conv6 run, ``examples/results/bench_train_conv6_epyc.json``: 1.00 and 0.78).
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
    "cpu_description",
    "cpu_has_amx",
    "cpu_has_bf16",
    "policy_name",
    "policy_scope",
    "resolve_jit",
    "resolve_precision",
]

PRECISIONS = ("auto", "float32", "bfloat16")
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo(cpuinfo: str | Path) -> tuple[str, set[str]]:
    """``(model name, flags)`` of the first processor in ``cpuinfo`` (``("", set())`` when it
    cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return "", set()
    name, flags = "", set()
    for line in text.splitlines():
        if line.startswith("model name") and not name:
            name = line.split(":", 1)[-1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[-1].split())
    return name, flags


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 instructions (AMX or AVX512-BF16 in ``/proc/cpuinfo``):
    where ``resolve_precision("auto")`` trains convolutional models in bfloat16."""
    return bool(_cpuinfo(cpuinfo)[1] & set(_BF16_FLAGS))


def cpu_has_amx(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has AMX bfloat16 tiles (``amx_bf16``): where bfloat16 convolutions are
    fastest (module docstring)."""
    return "amx_bf16" in _cpuinfo(cpuinfo)[1]


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU as run records show it: model name, core count and its bfloat16 features.

    >>> cpu_description("/nonexistent")  # doctest: +ELLIPSIS
    '... CPU cores (...)'
    """
    import os
    import platform

    name, flags = _cpuinfo(cpuinfo)
    features = [f for f in _BF16_FLAGS if f in flags]
    detail = ", ".join([platform.machine(), *([name] if name else [])])
    bf16 = f"; {' '.join(features)}" if features else ""
    return f"{os.cpu_count()} CPU cores ({detail}{bf16})"


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
