"""Remove units and filters of a folded model that can no longer matter.

After folding, a signed-supermask network is an ordinary Keras model whose kernels are mostly
zero. Whole units (Dense) or filters (Conv) often end up

* with **no outgoing weights** (every weight reading them in the next layer is zero): they
  cannot influence anything and are removed; or
* with **no incoming weights**: they output the constant ``act(bias)`` everywhere. The constant
  is pushed through the layers in between (BatchNorm, pooling, Flatten, element-wise
  activations, PReLU, depthwise convolutions) and folded into the next layer's bias (a bias is
  added if needed), then the unit is removed.  A constant that does not stay the same at every
  position (a non-zero one through zero padding or a zero-padded depthwise convolution, a
  negative one through a PReLU whose alpha varies over positions) is kept;
* behind a **depthwise filter that is all zero** (MobileNet-style blocks: expand -> depthwise
  -> project): the unit's output goes nowhere, and what the depthwise convolution passes on is
  its constant ``act(bias)``, folded into the next layer's bias like the one above.

Separable convolutions (Xception-style) take part on both sides, through the convolution they
compute (``depthwise`` then ``pointwise``): as a consumer, an input channel whose depthwise
filters are zero or whose pointwise rows are zero is never read, and loses both; as a
producer, a pointwise column that is zero is a unit with no incoming weights.

Removal is iterated to a fixed point. Only the chains ``producer -> [per-channel layers] ->
consumer`` of :func:`keras_ssm.graph.chains` are touched (every tensor with a single reader);
anything else (``Add``, ``Concatenate``, shared layers, model outputs, layers that mix channels
such as LayerNormalization or Softmax, non-element-wise activations such as softmax on the
producer, ...) keeps its channels. Output units are never removed.

Example:
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
    ...                       keras.layers.Dense(2)])
    >>> k = m.layers[0].get_weights()[0]; k[:, 1] = 0
    >>> m.layers[0].set_weights([k, np.array([0, .5, 0], "float32")])
    >>> small, report = shrink(m)
    >>> small.layers[0].units
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from keras_ssm.graph import (
    AFFINE,
    DEPTHWISE,
    ELEMENTWISE,
    ELEMENTWISE_ACTIVATIONS,
    FLATTEN,
    PADDING,
    Chain,
    chains,
    channel_kind,
    is_kernel_layer,
    is_separable_layer,
    positions,
)

__all__ = [
    "shrink",
    "align_channels",
    "ShrinkReport",
    "LayerShrink",
    "ELEMENTWISE_ACTIVATIONS",
]

_L = keras.layers
_DENSE = (_L.Dense,)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)


@dataclass
class LayerShrink:
    """What :func:`shrink` did to one layer."""

    name: str
    units_before: int
    units_after: int
    removed_no_input: int = 0
    removed_no_output: int = 0
    bias_folded: bool = False
    bias_added: bool = False


@dataclass
class ShrinkReport:
    """Per-layer record of a :func:`shrink` call, plus parameter counts."""

    layers: list[LayerShrink] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def __str__(self) -> str:
        if not self.layers:
            return (
                f"nothing to remove: every unit has inputs and outputs "
                f"(params: {self.params_before} -> {self.params_after})"
            )
        rows = [f"{'layer':<24}{'units':>14}{'no-in':>7}{'no-out':>7}  bias"]
        for e in self.layers:
            bias = "added+folded" if e.bias_added else ("folded" if e.bias_folded else "")
            rows.append(
                f"{e.name:<24}{e.units_before:>6} -> {e.units_after:<6}"
                f"{e.removed_no_input:>6}{e.removed_no_output:>7}  {bias}"
            )
        rows.append(f"params: {self.params_before} -> {self.params_after}")
        return "\n".join(rows)


# ----------------------------------------------------------------------------- graph


def _is_matmul(layer) -> bool:
    """Stock Dense / ConvND / SeparableConvND that reads its input's last axis through plain
    kernels."""
    quant = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
    return (
        type(layer) in _DENSE + _CONV + _SEPARABLE
        and (is_kernel_layer(layer) or is_separable_layer(layer))
        and quant is None
        and not getattr(layer, "lora_enabled", False)
        and layer.built
    )


def _chains(model: keras.Model) -> list[Chain]:
    """The model's chains (:func:`keras_ssm.graph.chains`) between stock Dense / Conv /
    SeparableConv layers."""
    return chains(model, _is_matmul, separable=True)


# ----------------------------------------------------------------------------- kernels
# A Dense / Conv layer's weights are ``[kernel, bias?]``; a separable convolution's are
# ``[depthwise (*spatial, in, m), pointwise (1.., in * m, out), bias?]``.  Both read as one
# kernel ``(*spatial, in, out)``: the convolution the layer computes.


def _bias_index(layer) -> int:
    return 2 if type(layer) in _SEPARABLE else 1


def _units(layer, weights: list[np.ndarray]) -> int:
    return int(weights[_bias_index(layer) - 1].shape[-1])


def _kernel(layer, weights: list[np.ndarray], support: bool = False) -> np.ndarray:
    """The layer's kernel ``(*spatial, in, out)``; ``support=True``: an array that is non-zero
    exactly where a path from that input to that output has non-zero weights (no cancellation)."""
    if type(layer) not in _SEPARABLE:
        return weights[0]
    dw, pw = weights[0], weights[1]
    if support:
        dw, pw = np.abs(dw), np.abs(pw)
    spatial, (cin, m), out = dw.shape[:-2], dw.shape[-2:], pw.shape[-1]
    k = np.einsum("tcm,cmo->tco", dw.reshape(-1, cin, m), pw.reshape(cin, m, out))
    return k.reshape(*spatial, cin, out)


def _take_units(layer, weights: list[np.ndarray], keep: np.ndarray) -> list[np.ndarray]:
    """The weights of ``layer`` with only its output units ``keep``."""
    at = _bias_index(layer) - 1  # the kernel whose last axis is the units, then the bias
    return [a[..., keep] if i >= at else a for i, a in enumerate(weights)]


def _take_inputs(layer, weights: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    """The weights of ``layer`` reading only its input channels ``rows``."""
    if type(layer) not in _SEPARABLE:
        return [np.take(weights[0], rows, axis=-2), *weights[1:]]
    dw, pw, *rest = weights
    m = dw.shape[-1]
    pw_rows = (rows[:, None] * m + np.arange(m)[None]).ravel()
    return [np.take(dw, rows, axis=-2), np.take(pw, pw_rows, axis=-2), *rest]


# ----------------------------------------------------------------------------- algebra


def _to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _bn_apply(layer, weights: list[np.ndarray], v: np.ndarray) -> np.ndarray:
    it = iter(weights)
    gamma = next(it) if layer.scale else 1.0
    beta = next(it) if layer.center else 0.0
    mean, var = next(it), next(it)
    inv = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + layer.epsilon)
    return (v - mean) * inv + beta


def _prelu_apply(
    alpha: np.ndarray, v: np.ndarray, uniform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """PReLU of a constant per channel; its alpha may vary over positions (then a negative
    constant does not stay uniform)."""
    a = alpha.astype(np.float64).reshape(-1, alpha.shape[-1])  # (positions, channels or 1)
    a = np.broadcast_to(a, (a.shape[0], v.size))
    same = np.all(a == a[0], axis=0)
    return np.where(v >= 0, v, a[0] * v), uniform & ((v >= 0) | same)


def _constant_at_consumer(
    chain: Chain, w: dict[str, list[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(v, uniform)`` per position on the consumer's input axis: the value each producer unit
    delivers there if it has no inputs, and whether that value is the same at every spatial
    position (zero padding of a non-zero constant, or a PReLU whose alpha varies over positions,
    breaks it)."""
    p = chain.producer
    pw, at = w[p.name], _bias_index(p)
    bias = pw[at] if len(pw) > at else np.zeros(_units(p, pw), np.float32)
    v = _to_numpy(p.activation(keras.ops.convert_to_tensor(bias[None].astype(np.float32))))[0]
    v = v.astype(np.float64)
    uniform = np.ones(v.shape, dtype=bool)
    for layer in chain.path:
        kind = channel_kind(layer)
        if kind == AFFINE:
            v = _bn_apply(layer, w[layer.name], v)
        elif kind == FLATTEN:
            s = int(np.prod(layer.input.shape[1:-1], dtype=np.int64))
            v, uniform = np.tile(v, s), np.tile(uniform, s)
        elif kind == PADDING:
            uniform = uniform & (v == 0)
        elif type(layer) is _L.PReLU:
            v, uniform = _prelu_apply(w[layer.name][0], v, uniform)
        elif kind == ELEMENTWISE:
            v = _to_numpy(layer(keras.ops.convert_to_tensor(v[None].astype(np.float32))))[0]
            v = v.astype(np.float64)
        elif kind == DEPTHWISE:
            v, uniform = _depthwise_apply(layer, w[layer.name], v, uniform)
        # identity layers and pooling keep constants unchanged
    return v, uniform


def _depthwise_zero(weights: list[np.ndarray]) -> np.ndarray:
    """Per channel: is a depthwise convolution's filter all zero (its output is then the
    constant ``act(bias)`` whatever it reads)?"""
    k = weights[0]
    return ~np.any(k.reshape(-1, k.shape[-2]) != 0, axis=0)


def _depthwise_apply(
    layer, weights: list[np.ndarray], v: np.ndarray, uniform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise convolution of a constant per channel: ``act(v * sum(filter) + bias)`` where
    every output sees every tap ("valid" padding, or a 1-tap filter); with zero padding the
    border sees fewer taps, so only a zero constant stays uniform. A channel whose filter is
    all zero outputs ``act(bias)`` everywhere, whatever came in."""
    k = weights[0].astype(np.float64)
    taps = k.reshape(-1, k.shape[-2])  # (taps, channels)
    bias = weights[1].astype(np.float64) if len(weights) > 1 else np.zeros(taps.shape[1])
    zero = _depthwise_zero(weights)
    every_tap = layer.padding == "valid" or taps.shape[0] == 1
    pre = np.where(zero, 0.0, v * taps.sum(axis=0)) + bias
    out = layer.activation(keras.ops.convert_to_tensor(pre[None].astype(np.float32)))
    return _to_numpy(out)[0].astype(np.float64), zero | (uniform & (every_tap | (v == 0)))


def _slice_path(chain: Chain, w: dict[str, list[np.ndarray]], channels: int, keep) -> None:
    """Per-channel weights on the path (BatchNorm, PReLU's alpha) follow the kept channels."""
    for i, layer in enumerate(chain.path):
        if not w.get(layer.name):
            continue
        at = np.sort(positions(chain.path[:i], channels)[:, keep].ravel())
        if channel_kind(layer) == AFFINE:
            w[layer.name] = [a[at] for a in w[layer.name]]
        elif channel_kind(layer) == DEPTHWISE:  # filters (*kernel, C, 1) and bias (C,)
            w[layer.name] = [np.take(a, at, axis=-2 if a.ndim > 1 else 0) for a in w[layer.name]]
        elif type(layer) is _L.PReLU:
            (alpha,) = w[layer.name]
            w[layer.name] = [alpha if alpha.shape[-1] == 1 else np.take(alpha, at, axis=-1)]
        else:  # pragma: no cover - every weighted kind is handled above
            raise TypeError(f"shrink cannot slice the weights of {layer.name!r}")


def _step(
    chain: Chain,
    w: dict[str, list[np.ndarray]],
    entries: dict[str, LayerShrink],
    added_bias: dict[str, bool],
) -> bool:
    """Remove what can be removed between one producer and its consumer; True if changed."""
    p, q = chain.producer, chain.consumer
    pk = _kernel(p, w[p.name], support=True)
    channels = pk.shape[-1]
    idx = positions(chain.path, channels)
    if idx is None:
        return False
    qk = _kernel(q, w[q.name])
    q_rows = np.moveaxis(qk, -2, 0)  # (in, *kernel_spatial, out)
    if q_rows.shape[0] != idx.size:
        return False
    rows = np.moveaxis(_kernel(q, w[q.name], support=True), -2, 0)[idx]  # (positions, C, ...)
    no_out = ~np.any(rows.reshape(idx.shape[0], channels, -1) != 0, axis=(0, 2))
    no_in = ~np.any(pk.reshape(-1, channels) != 0, axis=0)
    # a depthwise convolution on the path whose filter is zero: the unit's output goes nowhere,
    # and the consumer reads a constant from there on
    blocked = np.zeros(channels, dtype=bool)
    for layer in chain.path:
        if channel_kind(layer) == DEPTHWISE:
            blocked |= _depthwise_zero(w[layer.name])
    const_units = (no_in | blocked) & ~no_out
    folded = np.zeros(channels, dtype=bool)
    v = None
    if np.any(const_units):
        v, uniform = _constant_at_consumer(chain, w)
        spatial_one = type(q) in _DENSE or int(np.prod(qk.shape[:-2])) == 1
        foldable = spatial_one or q.padding == "valid"
        for c in np.flatnonzero(const_units):
            at = idx[:, c]
            folded[c] = np.all(uniform[at]) and (foldable or not np.any(v[at] != 0))
    removable = no_out | folded
    if np.all(removable):  # keep one unit: a silent one if there is one, else unit 0 unfolded
        first = int(np.flatnonzero(no_out)[0]) if np.any(no_out) else 0
        removable[first] = False
        folded[first] = False
    if not np.any(removable):
        return False
    contrib = None
    if np.any(folded):
        sel = idx[:, np.flatnonzero(folded)].ravel()
        r = q_rows[sel].astype(np.float64).reshape(sel.size, -1, qk.shape[-1])
        contrib = np.einsum("i,ijk->k", v[sel], r)
    keep = np.flatnonzero(~removable)
    entry = entries[p.name]
    entry.removed_no_input += int(np.sum(removable & no_in & ~no_out & ~blocked))
    entry.removed_no_output += int(np.sum(removable & (no_out | blocked)))
    entry.units_after = int(keep.size)
    # producer: drop kernel columns and bias entries
    w[p.name] = _take_units(p, w[p.name], keep)
    _slice_path(chain, w, channels, keep)
    # consumer: fold constants into the bias, drop input rows
    q_w, at = list(w[q.name]), _bias_index(q)
    if contrib is not None and np.any(contrib != 0):
        if len(q_w) == at:
            q_w.append(np.zeros(qk.shape[-1], np.float32))
            added_bias[q.name] = True
            entries[q.name].bias_added = True
        q_w[at] = (q_w[at].astype(np.float64) + contrib).astype(np.float32)
        entries[q.name].bias_folded = True
    w[q.name] = _take_inputs(q, q_w, np.sort(idx[:, keep].ravel()))
    return True


# ----------------------------------------------------------------------------- rebuild


def _rebuild(
    model: keras.Model, changes: dict[str, dict[str, Any]], w: dict[str, list[np.ndarray]]
) -> keras.Model:
    """A clone of ``model`` with ``changes`` to its layers' configs (e.g. ``filters``) and the
    weights ``w`` (by layer name): what :func:`shrink` and :func:`align_channels` return."""

    def clone(layer):
        cfg = layer.get_config()
        cfg.update(changes.get(layer.name, {}))
        return layer.__class__.from_config(cfg)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in new.layers:
        if w.get(layer.name):
            layer.set_weights(w[layer.name])
    return new


def _count(w: dict[str, list[np.ndarray]]) -> int:
    return int(sum(a.size for ws in w.values() for a in ws))


def shrink(model: keras.Model, max_iterations: int = 100) -> tuple[keras.Model, ShrinkReport]:
    """Remove dead units/filters; return ``(smaller_model, report)`` with identical outputs.

    Args:
        model: a built Sequential or functional Keras 3 model of stock layers (what
            ``keras_ssm.fold`` returns). It is not modified.
        max_iterations: bound on the fixed-point passes.

    Returns:
        A new model computing the same function (up to float32 rounding of folded biases)
        and a :class:`ShrinkReport` listing each touched layer's units before/after.

    Example:
        >>> small, report = shrink(folded)                      # doctest: +SKIP
        >>> print(report)                                       # doctest: +SKIP
    """
    if not model.built:
        raise ValueError("the model must be built")
    if not isinstance(model, keras.Sequential) and not any(
        c.__name__ == "Functional" for c in type(model).__mro__
    ):
        raise TypeError("shrink supports Sequential and functional models only")
    model_chains = _chains(model)
    w = {layer.name: [np.array(a) for a in layer.get_weights()] for layer in model.layers}
    before = _count(w)
    entries: dict[str, LayerShrink] = {}
    for layer in model.layers:
        if _is_matmul(layer):
            n = _units(layer, w[layer.name])
            entries[layer.name] = LayerShrink(layer.name, n, n)
    added_bias: dict[str, bool] = {}
    for _ in range(max_iterations):
        changed = False
        for chain in model_chains:
            changed |= _step(chain, w, entries, added_bias)
        if not changed:
            break
    changes: dict[str, dict[str, Any]] = {}
    for name, e in entries.items():
        layer = model.get_layer(name)
        if e.units_after != e.units_before:
            key = "units" if type(layer) in _DENSE else "filters"
            changes.setdefault(name, {})[key] = e.units_after
    for name in added_bias:
        changes.setdefault(name, {})["use_bias"] = True

    new = _rebuild(model, changes, w)
    report = ShrinkReport(
        layers=[e for e in entries.values() if e.units_after != e.units_before or e.bias_folded],
        params_before=before,
        params_after=_count(w),
    )
    return new, report


# ----------------------------------------------------------------------------- alignment

#: onnxruntime's CPU convolutions run in its blocked NCHWc layout (fast) only when a
#: convolution's input channels are a multiple of the block (16 with AVX-512, 8 with AVX2) or
#: fewer than it; otherwise they fall back to a much slower path.  A shrunk model's odd filter
#: counts (e.g. 57 or 27) put the convolutions after them on that path.
NCHWC_BLOCK = 16


def _pad_axis(a: np.ndarray, extra: int, value: float, axis: int = -1) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = extra
    return np.concatenate([a, np.full(shape, value, dtype=a.dtype)], axis=axis)


def _padded_weights(layer, weights: list[np.ndarray], extra: int) -> list[np.ndarray] | None:
    """A per-channel layer's weights with ``extra`` channels added that leave a zero channel
    finite (it reads zeros and its output meets zero weights, so any finite value is exact);
    ``None``: this layer cannot be padded."""
    if type(layer) is _L.BatchNormalization:
        values = [1.0] * layer.scale + [0.0] * layer.center + [0.0, 1.0]
        return [_pad_axis(a, extra, v) for a, v in zip(weights, values, strict=True)]
    if type(layer) is _L.PReLU:  # an alpha shared over the channels stays as it is
        return [a if a.shape[-1] == 1 else _pad_axis(a, extra, 0.0) for a in weights]
    if channel_kind(layer) == DEPTHWISE:  # filters (*kernel, C, 1) and bias (C,)
        return [_pad_axis(a, extra, 0.0, axis=-2 if a.ndim > 1 else 0) for a in weights]
    return None


def align_channels(
    model: keras.Model,
    multiple: int = NCHWC_BLOCK,
    limits: dict[str, int] | None = None,
) -> tuple[keras.Model, dict[str, tuple[int, int]]]:
    """Pad the filter counts of 2D convolutions that feed another 2D convolution up to a
    multiple of ``multiple`` with all-zero filters: the same function, computed faster by
    runtimes whose fast convolution needs aligned channel counts (onnxruntime's NCHWc).

    A filter count below ``multiple`` is left as it is (the next convolution then reads it
    directly). The padded filters are zero, their consumer's weights for them are zero, and a
    BatchNormalization, PReLU or depthwise convolution between the two gets a finite entry for
    them, so the outputs are those of ``model``.

    Args:
        model: a built Sequential or functional model of stock layers (e.g. what :func:`shrink`
            returns). It is not modified.
        multiple: the channel block (default :data:`NCHWC_BLOCK`, 16).
        limits: when given, only these layers are padded, each to at most its value (e.g. the
            counts before :func:`shrink`: never wider than the trained model).

    Returns:
        ``(model, padded)`` where ``padded`` maps each padded layer to ``(filters before,
        filters after)``; ``model`` itself when nothing needs padding.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(20, 3, name="a"),
        ...                       keras.layers.ReLU(), keras.layers.Conv2D(4, 3, name="b")])
        >>> aligned, padded = align_channels(m)
        >>> padded
        {'a': (20, 32)}
        >>> x = keras.random.uniform((2, 8, 8, 3))
        >>> bool(np.allclose(aligned(x), m(x), rtol=1e-6, atol=1e-6))
        True
    """
    if int(multiple) < 2:
        raise ValueError(f"`multiple` must be an integer >= 2; received multiple={multiple!r}.")
    w = {layer.name: [np.array(a) for a in layer.get_weights()] for layer in model.layers}
    padded: dict[str, tuple[int, int]] = {}
    for chain in _chains(model):
        p, q = chain.producer, chain.consumer
        if not all(
            type(x) is _L.Conv2D and x.groups == 1 and x.data_format == "channels_last"
            for x in (p, q)
        ):
            continue  # a Dense consumer gains nothing and would grow by whole zero rows
        if limits is not None and p.name not in limits:
            continue
        n = w[p.name][0].shape[-1]
        target = -(-n // multiple) * multiple
        if limits is not None:
            target = min(target, int(limits[p.name]))
        if n < multiple or target <= n:
            continue
        if w[q.name][0].shape[-2] != n:  # e.g. a Flatten in between
            continue
        extra = target - n
        path = {x.name: _padded_weights(x, w[x.name], extra) for x in chain.path if w.get(x.name)}
        if any(padded_path is None for padded_path in path.values()):
            continue
        w.update(path)
        w[p.name] = [_pad_axis(a, extra, 0.0) for a in w[p.name]]
        # the consumer's kernel (kh, kw, n, out): zero rows for the padded input channels
        w[q.name][0] = _pad_axis(w[q.name][0], extra, 0.0, axis=-2)
        padded[p.name] = (n, target)
    if not padded:
        return model, padded

    changes = {name: {"filters": after} for name, (_, after) in padded.items()}
    return _rebuild(model, changes, w), padded
