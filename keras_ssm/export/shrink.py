"""Remove units and filters of a folded model that can no longer matter.

After folding, a signed-supermask network is an ordinary Keras model whose kernels are mostly
zero. Whole units (Dense) or filters (Conv) often end up

* with **no outgoing weights** (every weight reading them in the next layer is zero): they
  cannot influence anything and are removed; or
* with **no incoming weights**: they output the constant ``act(bias)`` everywhere. The constant
  is pushed through the layers in between (BatchNorm, pooling, Flatten, element-wise
  activations) and folded into the next layer's bias (a bias is added if needed), then the
  unit is removed.

Removal is iterated to a fixed point. Only chains ``producer -> [channel-wise layers] ->
consumer`` where every tensor has a single consumer are touched; anything else (``Add``,
``Concatenate``, shared layers, model outputs, non-element-wise activations such as softmax
on the producer, ...) keeps its channels. Output units are never removed.

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

__all__ = ["shrink", "ShrinkReport", "LayerShrink", "ELEMENTWISE_ACTIVATIONS"]

ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "elu",
        "selu",
        "celu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "silu",
        "swish",
        "hard_silu",
        "hard_swish",
        "exponential",
        "leaky_relu",
        "mish",
        "log_sigmoid",
        "hard_tanh",
        "squareplus",
        "sparse_plus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
    }
)

_L = keras.layers
_DENSE = (_L.Dense,)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_IDENTITY = (
    _L.Dropout,
    _L.SpatialDropout1D,
    _L.SpatialDropout2D,
    _L.SpatialDropout3D,
    _L.GaussianNoise,
    _L.GaussianDropout,
    _L.AlphaDropout,
    _L.ActivityRegularization,
    _L.Identity,
)
_POOL = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D,
)
_ACT = (_L.ReLU, _L.ELU, _L.LeakyReLU)
_OUT = "__output__"


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


def _activation_name(act: Any) -> str | None:
    try:
        name = keras.activations.serialize(act)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _is_matmul(layer) -> bool:
    """Stock Dense / ConvND that reads its input's last axis through a plain kernel."""
    t = type(layer)
    if t in _DENSE:
        ok = True
    elif t in _CONV:
        ok = layer.groups == 1 and _channels_last(layer)
    else:
        return False
    quant = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
    return ok and quant is None and not getattr(layer, "lora_enabled", False) and layer.built


def _is_passthrough(layer) -> bool:
    """Layers acting on the last axis channel by channel (constants stay constants)."""
    t = type(layer)
    if t in _IDENTITY or t in _ACT:
        return True
    if t is _L.Activation:
        return _activation_name(layer.activation) in ELEMENTWISE_ACTIVATIONS
    if t in _POOL or t is _L.Flatten:
        return _channels_last(layer)
    if t is _L.BatchNormalization:
        rank = len(layer.input.shape)
        return layer.axis in (-1, rank - 1)
    return False


def _histories(obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(obj["config"]["keras_history"][0])
            return
        for v in obj.values():
            _histories(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _histories(v, out)


def _graph(model: keras.Model) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    """``(inputs, consumers, shared)`` by layer name; ``_OUT`` marks a model output."""
    inputs: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    shared: set[str] = set()
    if isinstance(model, keras.Sequential):
        prev = None
        for layer in model.layers:
            inputs[layer.name] = [prev] if prev else ["__input__"]
            if prev:
                consumers[prev].append(layer.name)
            prev = layer.name
        if prev:
            consumers[prev].append(_OUT)
        return inputs, consumers, shared
    cfg = model.get_config()
    if not isinstance(cfg, dict) or "layers" not in cfg or "output_layers" not in cfg:
        raise TypeError("shrink supports Sequential and functional models only")
    for lc in cfg["layers"]:
        name = lc["name"]
        nodes = lc.get("inbound_nodes", [])
        if len(nodes) > 1:
            shared.add(name)
        srcs: list[str] = []
        _histories(nodes, srcs)
        inputs[name] = srcs
        for s in srcs:
            consumers.setdefault(s, []).append(name)
    outs = cfg["output_layers"]
    outs = [outs] if outs and isinstance(outs[0], str) else outs
    for o in outs:
        consumers.setdefault(o[0], []).append(_OUT)
    return inputs, consumers, shared


@dataclass
class _Chain:
    producer: Any
    path: list[Any]
    consumer: Any


def _chains(model: keras.Model) -> list[_Chain]:
    inputs, consumers, shared = _graph(model)
    by_name = {layer.name: layer for layer in model.layers}
    chains = []
    for p in model.layers:
        if (
            not _is_matmul(p)
            or p.name in shared
            or _activation_name(p.activation) not in ELEMENTWISE_ACTIVATIONS
        ):
            continue
        path, cur = [], p.name
        while True:
            cons = consumers.get(cur, [])
            if len(cons) != 1 or cons[0] == _OUT:
                break
            nxt = by_name[cons[0]]
            if len(inputs[nxt.name]) != 1 or nxt.name in shared:
                break
            if _is_matmul(nxt):
                chains.append(_Chain(p, path, nxt))
                break
            if not _is_passthrough(nxt):
                break
            path.append(nxt)
            cur = nxt.name
    return chains


# ----------------------------------------------------------------------------- algebra


def _to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _index_map(chain: _Chain, channels: int) -> tuple[np.ndarray, bool]:
    """``(idx, ok)``: idx[p, c] = position on the consumer's input axis of channel c."""
    idx = np.arange(channels)[None, :]
    for layer in chain.path:
        if type(layer) is _L.Flatten:
            spatial = layer.input.shape[1:-1]
            if any(d is None for d in spatial):
                return idx, False
            s = int(np.prod(spatial, dtype=np.int64))
            width = idx.size
            idx = (np.arange(s)[:, None, None] * width + idx[None]).reshape(-1, channels)
    return idx, True


def _bn_apply(layer, weights: list[np.ndarray], v: np.ndarray) -> np.ndarray:
    it = iter(weights)
    gamma = next(it) if layer.scale else 1.0
    beta = next(it) if layer.center else 0.0
    mean, var = next(it), next(it)
    inv = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + layer.epsilon)
    return (v - mean) * inv + beta


def _constant_at_consumer(chain: _Chain, w: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Value each producer unit delivers to the consumer's input axis if it has no inputs."""
    p = chain.producer
    pw = w[p.name]
    bias = pw[1] if len(pw) > 1 else np.zeros(pw[0].shape[-1], np.float32)
    v = _to_numpy(p.activation(keras.ops.convert_to_tensor(bias[None].astype(np.float32))))[0]
    v = v.astype(np.float64)
    for layer in chain.path:
        t = type(layer)
        if t is _L.BatchNormalization:
            v = _bn_apply(layer, w[layer.name], v)
        elif t is _L.Flatten:
            s = int(np.prod(layer.input.shape[1:-1], dtype=np.int64))
            v = np.tile(v, s)
        elif t in _ACT or t is _L.Activation:
            v = _to_numpy(layer(keras.ops.convert_to_tensor(v[None].astype(np.float32))))[0]
            v = v.astype(np.float64)
        # identity layers and pooling keep constants unchanged
    return v


def _bn_slice(layer, weights: list[np.ndarray], keep: np.ndarray) -> list[np.ndarray]:
    return [a[keep] for a in weights]


def _step(
    chain: _Chain,
    w: dict[str, list[np.ndarray]],
    entries: dict[str, LayerShrink],
    added_bias: dict[str, bool],
) -> bool:
    """Remove what can be removed between one producer and its consumer; True if changed."""
    p, q = chain.producer, chain.consumer
    pk = w[p.name][0]
    channels = pk.shape[-1]
    idx, ok = _index_map(chain, channels)
    if not ok:
        return False
    qk = w[q.name][0]
    q_rows = np.moveaxis(qk, -2, 0)  # (in, *kernel_spatial, out)
    if q_rows.shape[0] != idx.size:
        return False
    rows = q_rows[idx]  # (positions, C, ...)
    no_out = ~np.any(rows.reshape(idx.shape[0], channels, -1) != 0, axis=(0, 2))
    no_in = ~np.any(pk.reshape(-1, channels) != 0, axis=0)
    const_units = no_in & ~no_out
    folded = np.zeros(channels, dtype=bool)
    v = None
    if np.any(const_units):
        v = _constant_at_consumer(chain, w)
        spatial_one = type(q) in _DENSE or int(np.prod(qk.shape[:-2])) == 1
        foldable = spatial_one or q.padding == "valid"
        for c in np.flatnonzero(const_units):
            folded[c] = foldable or not np.any(v[idx[:, c]] != 0)
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
    entry.removed_no_input += int(np.sum(removable & no_in & ~no_out))
    entry.removed_no_output += int(np.sum(removable & no_out))
    entry.units_after = int(keep.size)
    # producer: drop kernel columns and bias entries
    w[p.name] = [a[..., keep] for a in w[p.name]]
    # path: BatchNorm parameters follow the channel positions
    for layer in chain.path:
        if type(layer) is _L.BatchNormalization:
            sub_idx, _ = _index_map(_Chain(p, chain.path[: chain.path.index(layer)], q), channels)
            w[layer.name] = _bn_slice(layer, w[layer.name], np.sort(sub_idx[:, keep].ravel()))
    # consumer: fold constants into the bias, drop input rows
    q_w = w[q.name]
    if contrib is not None and np.any(contrib != 0):
        if len(q_w) == 1:
            q_w = [q_w[0], np.zeros(qk.shape[-1], np.float32)]
            added_bias[q.name] = True
            entries[q.name].bias_added = True
        q_w[1] = (q_w[1].astype(np.float64) + contrib).astype(np.float32)
        entries[q.name].bias_folded = True
    keep_rows = np.sort(idx[:, keep].ravel())
    q_w[0] = np.take(q_w[0], keep_rows, axis=-2)
    w[q.name] = q_w
    return True


# ----------------------------------------------------------------------------- rebuild


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
    chains = _chains(model)
    w = {layer.name: [np.array(a) for a in layer.get_weights()] for layer in model.layers}
    before = _count(w)
    entries: dict[str, LayerShrink] = {}
    for layer in model.layers:
        if _is_matmul(layer):
            n = w[layer.name][0].shape[-1]
            entries[layer.name] = LayerShrink(layer.name, n, n)
    added_bias: dict[str, bool] = {}
    for _ in range(max_iterations):
        changed = False
        for chain in chains:
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

    def clone(layer):
        cfg = layer.get_config()
        cfg.update(changes.get(layer.name, {}))
        return layer.__class__.from_config(cfg)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in new.layers:
        if w.get(layer.name):
            layer.set_weights(w[layer.name])
    report = ShrinkReport(
        layers=[e for e in entries.values() if e.units_after != e.units_before or e.bias_folded],
        params_before=before,
        params_after=_count(w),
    )
    return new, report
