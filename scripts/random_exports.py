#!/usr/bin/env python
"""Random small signed-supermask architectures through fold -> shrink -> ONNX / LiteRT.

Each model is a small random stack of masked Dense / Conv2D layers (``keras_ssm.layers``, or a
stock model turned masked by ``keras_ssm.supermask``) with BatchNormalization, pooling, Flatten,
global pooling and residual ``Add``s. Its scores are set so that a random share of the weights
(often most of them) is hidden and some units lose all their inputs or outputs. Then:

* ``fold``: ``keras_ssm.fold(masked)`` against the masked model;
* ``shrink``: ``keras_ssm.export.shrink(folded)`` against the folded model;
* ``onnx``, ``onnx_int2``, ``tflite_sparse``, ``tflite_dense``: the shrunk model exported
  (``onnx_bytes``, the same with exact 2-bit weight codes at opset 25, ``tflite_bytes(sparse=True
  / False)``) and run (onnxruntime with default options, LiteRT) against Keras;
* ``onnx_aligned``: the shrunk model with its convolutions padded by zero filters
  (``keras_ssm.export.align_channels``, to multiples of 4 so that these small models have
  some to pad), exported to ONNX, against the shrunk model.

Every check runs on inputs on which the model's outputs vary (standard normal inputs, rescaled
if needed); a model whose outputs stay constant or saturated on all of them is skipped and
counted as degenerate. A stage mismatches when ``max|got - want| / max|want|`` exceeds
``--rtol``; an exception in a stage is counted apart.

Example (niced: the machine is shared)::

    nice -n 5 python scripts/random_exports.py --count 300 --seed 0 --json /tmp/failures.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_ssm  # noqa: E402
from keras_ssm.wrap import masked_layers  # noqa: E402

L = keras.layers
STAGES = ("fold", "shrink", "onnx", "onnx_int2", "onnx_aligned", "tflite_sparse", "tflite_dense")
ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "linear", "swish")
SATURATING = ("softmax", "sigmoid", "tanh")


# ----------------------------------------------------------------------------- architectures


class _Builder:
    """Draws one random architecture; ``masked`` picks masked layers or stock ones (to be
    turned masked by ``keras_ssm.supermask``)."""

    def __init__(self, rng: np.random.Generator, masked: bool) -> None:
        self.rng = rng
        self.masked = masked
        self.parts: list[str] = []

    def _int(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def _act(self) -> str:
        return str(self.rng.choice(ACTIVATIONS))

    def dense(self, units: int, activation: str | None = None) -> L.Layer:
        act = activation or self._act()
        bias = bool(self.rng.random() < 0.7)
        self.parts.append(f"D{units}{'' if bias else 'nb'}:{act}")
        cls = keras_ssm.layers.MaskedDense if self.masked else L.Dense
        return cls(units, activation=act, use_bias=bias)

    def conv(self, filters: int, padding: str | None = None) -> L.Layer:
        size = self._int(1, 3)
        pad = padding or str(self.rng.choice(["same", "valid"]))
        act = self._act()
        bias = bool(self.rng.random() < 0.7)
        self.parts.append(f"C{filters}k{size}{pad[0]}{'' if bias else 'nb'}:{act}")
        cls = keras_ssm.layers.MaskedConv2D if self.masked else L.Conv2D
        return cls(filters, size, padding=pad, activation=act, use_bias=bias)

    def extras(self, x: Any, spatial: bool) -> Any:
        """Maybe BatchNorm, an activation layer and (on images) a pooling layer."""
        if self.rng.random() < 0.35:
            self.parts.append("BN")
            x = L.BatchNormalization()(x)
        if self.rng.random() < 0.2:
            act = self._act()
            self.parts.append(f"A:{act}")
            x = L.Activation(act)(x)
        if spatial and min(x.shape[1:3]) >= 2 and self.rng.random() < 0.4:
            pool = [L.MaxPooling2D, L.AveragePooling2D][self._int(0, 1)]
            self.parts.append(pool.__name__[:3] + "Pool")
            x = pool(2, padding=str(self.rng.choice(["same", "valid"])))(x)
        return x

    def head(self, x: Any) -> Any:
        for _ in range(self._int(0, 2)):
            x = self.extras(self.dense(self._int(1, 24))(x), spatial=False)
        units = self._int(1, 10)
        acts = ["linear", "linear", "tanh", "sigmoid"] + (["softmax"] if units > 1 else [])
        return self.dense(units, activation=str(self.rng.choice(acts)))(x)

    def mlp(self) -> keras.Model:
        inp = keras.Input((self._int(1, 40),))
        self.parts.append(f"in{inp.shape[1]}")
        x = inp
        for _ in range(self._int(1, 3)):
            x = self.extras(self.dense(self._int(1, 32))(x), spatial=False)
        return keras.Model(inp, self.head(x))

    def residual_mlp(self) -> keras.Model:
        inp = keras.Input((self._int(2, 30),))
        self.parts.append(f"in{inp.shape[1]}")
        units = self._int(2, 20)
        x = self.dense(units)(inp)
        for _ in range(self._int(1, 2)):
            r = self.extras(self.dense(units)(x), spatial=False)
            self.parts.append("Add")
            x = L.Add()([x, r])
        return keras.Model(inp, self.head(x))

    def cnn(self, residual: bool = False) -> keras.Model:
        shape = (self._int(3, 9), self._int(3, 9), self._int(1, 4))
        inp = keras.Input(shape)
        self.parts.append("in" + "x".join(map(str, shape)))
        x = self.conv(self._int(1, 12), padding="same" if residual else None)(inp)
        for _ in range(self._int(0, 2)):
            if residual:
                r = self.conv(x.shape[-1], padding="same")(x)
                self.parts.append("Add")
                x = L.Add()([x, r])
            x = self.extras(x, spatial=True)
            if min(x.shape[1:3]) >= 3:
                x = self.conv(self._int(1, 12))(x)
        flat = [L.Flatten, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D][self._int(0, 2)]
        self.parts.append(flat.__name__.replace("Global", "G").replace("Pooling2D", "P"))
        x = flat()(x)
        if self.rng.random() < 0.3:
            self.parts.append("BN")
            x = L.BatchNormalization()(x)
        return keras.Model(inp, self.head(x))


def build_masked(rng: np.random.Generator) -> tuple[keras.Model, str]:
    """A random masked model (built, float32) and a short description of its layers."""
    kind = str(rng.choice(["mlp", "mlp", "residual_mlp", "cnn", "cnn", "residual_cnn"]))
    wrapped = bool(rng.random() < 0.3)
    b = _Builder(rng, masked=not wrapped)
    model = {
        "mlp": b.mlp,
        "residual_mlp": b.residual_mlp,
        "cnn": b.cnn,
        "residual_cnn": lambda: b.cnn(residual=True),
    }[kind]()
    if wrapped:
        model = keras_ssm.supermask(model)
    return model, f"{kind}{' (supermask)' if wrapped else ''}: " + " ".join(b.parts)


def set_masks(
    model: keras.Model, rng: np.random.Generator, damping: float = 1.0
) -> dict[str, float]:
    """Scores that hide a random share of each kernel (often most of it; ``damping`` < 1 scales
    the share down) and kill some units (no incoming weights) and input channels (no outgoing
    weights); random biases and BatchNorm statistics. Returns the hidden share per layer."""
    hidden = {}
    for layer in masked_layers(model):
        part = layer.masked_parts()[0]
        shape = tuple(part.scores.shape)
        tau = float(keras.ops.convert_to_numpy(part.mask_state["tau"]))
        share = rng.uniform(0.8, 0.98) if rng.random() < 0.5 else rng.uniform(0.2, 0.8)
        share *= damping
        keep = rng.random(shape) >= share
        units, fan = shape[-1], shape[-2]
        if units > 1 and rng.random() < 0.5 * damping:  # units without inputs
            dead = rng.choice(units, size=int(rng.integers(1, units // 2 + 2)), replace=False)
            keep[..., dead] = False
        if fan > 1 and rng.random() < 0.4 * damping:  # inputs read by no unit
            dead = rng.choice(fan, size=int(rng.integers(1, fan // 2 + 2)), replace=False)
            keep[..., dead, :] = False
        sign = rng.choice([-1.0, 1.0], size=shape)
        big = sign * tau * rng.uniform(1.5, 3.0, size=shape)
        small = tau * rng.uniform(-0.9, 0.9, size=shape)
        part.scores.assign(np.where(keep, big, small).astype("float32"))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.5, size=layer.bias.shape).astype("float32"))
        hidden[layer.name] = round(float(1.0 - keep.mean()), 4)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))
    return hidden


# ----------------------------------------------------------------------------- checks


def _numpy(y: Any) -> list[np.ndarray]:
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64) for t in ys]


def degenerate(model: keras.Model, ys: list[np.ndarray]) -> str | None:
    """Why outputs ``ys`` (batch first) cannot show an export error, or ``None``."""
    for y in ys:
        if not np.all(np.isfinite(y)):
            return "non-finite"
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        if y.shape[0] < 2 or float(np.max(np.ptp(y, axis=0))) <= 1e-4 * max(scale, 1e-6):
            return "constant"
    act = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    if act in SATURATING:
        low = {"softmax": 0.0, "sigmoid": 0.0, "tanh": -1.0}[act]
        y = ys[0]
        at_bounds = np.minimum(np.abs(y - low), np.abs(y - 1.0)) < 1e-4
        if at_bounds.mean() > 0.9:
            return "saturated"
    return None


def pick_inputs(
    model: keras.Model, rng: np.random.Generator, batch: int = 16
) -> tuple[np.ndarray | None, str | None]:
    """Inputs on which the model's outputs vary, or ``(None, why)``."""
    shape = (batch,) + tuple(int(d) for d in model.inputs[0].shape[1:])
    why = None
    for scale in (1.0, 3.0, 0.3, 10.0, 0.05):
        x = (rng.standard_normal(shape) * scale).astype("float32")
        why = degenerate(model, _numpy(model(x, training=False)))
        if why is None:
            return x, None
    return None, why


def rel_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    from keras_ssm.export._verify import max_rel_error

    return max_rel_error(got, want)


def _keras(model: keras.Model) -> Callable[[np.ndarray], list[np.ndarray]]:
    return lambda x: _numpy(model(x, training=False))


def _onnx(
    model: keras.Model, rec: dict[str, Any] | None = None, code_bits: int = 0
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """onnxruntime on the model's ONNX file (default session options); with ``code_bits``, the
    file with exact integer weight codes of that width (``rec["int_coded"]``: how many)."""
    from keras_ssm.export.onnx import onnx_bytes
    from keras_ssm.export.runtime import ort_session

    proto, quantized = onnx_bytes(model, int8=bool(code_bits), code_bits=code_bits or 8)
    if rec is not None:
        rec["int_coded"] = len(quantized)
    sess = ort_session(proto.SerializeToString())
    name = sess.get_inputs()[0].name
    return lambda x: [np.asarray(y, np.float64) for y in sess.run(None, {name: x})]


def _aligned(model: keras.Model, rec: dict[str, Any]) -> keras.Model:
    """``model`` with its convolutions padded to multiples of 4 (``rec["aligned"]``: how many)."""
    aligned, padded = keras_ssm.export.align_channels(model, multiple=4)
    rec["aligned"] = len(padded)
    return aligned


def _tflite(
    model: keras.Model, sparse: bool, rec: dict[str, Any]
) -> Callable[[np.ndarray], list[np.ndarray]]:
    from keras_ssm.export import tflite

    if hasattr(tflite, "_tflite_bytes"):  # records what was re-encoded (when it can)
        data, repair = tflite._tflite_bytes(model, sparse, False)
        if repair:
            rec["tflite_repair"] = repair
    else:
        data = tflite.tflite_bytes(model, sparse=sparse)
    return lambda x: [np.asarray(y, np.float64) for y in tflite.run_tflite(data, x)]


def sparse_tensors(model: keras.Model) -> list[dict[str, Any]]:
    """What the sparse LiteRT flatbuffer of ``model`` stores sparse: per tensor, its shape, the
    block map and the size of each stored dimension, and the operators reading it."""
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_ssm.export.tflite import tflite_bytes

    fb = flatbuffer_utils.convert_bytearray_to_object(tflite_bytes(model, sparse=True))
    out = []
    for graph in fb.subgraphs:
        for i, t in enumerate(graph.tensors):
            if t.sparsity is None:
                continue
            readers = [
                flatbuffer_utils.opcode_to_name(fb, op.opcodeIndex)
                for op in graph.operators
                if i in list(op.inputs)
            ]
            data = fb.buffers[t.buffer].data
            blocks = [] if t.sparsity.blockMap is None else [int(d) for d in t.sparsity.blockMap]
            out.append(
                {
                    "shape": [int(d) for d in t.shape],
                    "block_map": blocks,
                    "stored_dims": [
                        int(m.denseSize) if m.format == 0 else "csr" for m in t.sparsity.dimMetadata
                    ],
                    "stored_bytes": 0 if data is None else len(data),
                    # entries of a blocked dimension past its last whole block: not stored
                    "unblocked_tail": [
                        int(t.shape[d]) % int(m.denseSize)
                        for d, m in zip(blocks, t.sparsity.dimMetadata[len(t.shape) :], strict=True)
                    ],
                    "readers": readers,
                }
            )
    return out


def check_model(index: int, seed: int, stages: tuple[str, ...], rtol: float) -> dict[str, Any]:
    """Build model ``index`` of seed ``seed`` and run the stages. The record says, per stage,
    the relative error (or the exception), and whether the model was degenerate."""
    rng = np.random.default_rng([seed, index])
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    masked, desc = build_masked(rng)
    rec: dict[str, Any] = {"index": index, "seed": seed, "model": desc}
    for damping in (1.0, 0.8, 0.5):  # a dead model gets two more tries with fewer zeros
        rec["hidden"] = set_masks(masked, rng, damping)
        x, why = pick_inputs(masked, rng)
        if x is not None:
            break
    else:
        rec["degenerate"] = why
        return rec
    folded = keras_ssm.fold(masked)
    with contextlib.redirect_stdout(io.StringIO()):
        small, report = keras_ssm.export.shrink(folded)
    rec["params"] = [report.params_before, report.params_after]
    want = {"fold": _numpy(masked(x, training=False))}
    want["shrink"] = _numpy(folded(x, training=False))
    ref = _numpy(small(x, training=False))
    run: dict[str, Callable[[], Callable[[np.ndarray], list[np.ndarray]]]] = {
        "fold": lambda: _keras(folded),
        "shrink": lambda: _keras(small),
        "onnx": lambda: _onnx(small),
        "onnx_int2": lambda: _onnx(small, rec, code_bits=2),
        "onnx_aligned": lambda: _onnx(_aligned(small, rec)),
        "tflite_sparse": lambda: _tflite(small, True, rec),
        "tflite_dense": lambda: _tflite(small, False, rec),
    }
    rec["errors"], rec["exceptions"] = {}, {}
    for stage in stages:
        try:
            err = rel_error(run[stage]()(x), want.get(stage, ref))
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            rec["exceptions"][stage] = "".join(traceback.format_exception_only(e)).strip()[-500:]
            continue
        rec["errors"][stage] = err
    if any(not rec["errors"].get(s, 0.0) <= rtol for s in stages if s.startswith("tflite")):
        with contextlib.suppress(Exception):
            rec["sparse_tensors"] = sparse_tensors(small)
    return rec


# ----------------------------------------------------------------------------- main


def summarize(records: list[dict[str, Any]], stages: tuple[str, ...], rtol: float) -> str:
    checked = [r for r in records if "degenerate" not in r]
    skipped = Counter(r["degenerate"] for r in records if "degenerate" in r)
    lines = [
        f"models: {len(records)}  checked: {len(checked)}  degenerate (skipped): "
        f"{sum(skipped.values())} {dict(skipped) if skipped else ''}".rstrip(),
        f"{'stage':<15}{'checked':>8}{'mismatch':>10}{'exception':>11}{'max rel err':>14}",
    ]
    for s in stages:
        errs = [r["errors"][s] for r in checked if s in r["errors"]]
        bad = sum(1 for e in errs if not e <= rtol)
        exc = sum(1 for r in checked if s in r["exceptions"])
        worst = f"{max(errs):.3g}" if errs else "-"
        lines.append(f"{s:<15}{len(errs) + exc:>8}{bad:>10}{exc:>11}{worst:>14}")
    coded = [r["int_coded"] for r in checked if "int_coded" in r]
    if coded:
        lines.append(
            f"ONNX int2: {sum(c > 0 for c in coded)} of {len(coded)} model(s) with ternary "
            f"weights stored as 2-bit codes ({sum(coded)} tensors)"
        )
    aligned = [r["aligned"] for r in checked if "aligned" in r]
    if aligned:
        lines.append(
            f"ONNX aligned: {sum(a > 0 for a in aligned)} of {len(aligned)} model(s) with "
            f"convolutions padded by zero filters ({sum(aligned)} layers)"
        )
    repairs = [r["tflite_repair"] for r in checked if "tflite_repair" in r]
    if repairs:
        tensors = sum(len(r.get("sparse_reencoded", [])) for r in repairs)
        dense = sum("sparse_fallback" in r for r in repairs)
        lines.append(
            f"LiteRT sparse: {len(repairs) - dense} model(s) with {tensors} tensor(s) "
            f"re-encoded, {dense} stored dense after a failed repair"
        )
    return "\n".join(lines)


def failures(records: list[dict[str, Any]], rtol: float) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r.get("exceptions") or any(not e <= rtol for e in r.get("errors", {}).values())
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=50, help="number of random models (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first model (default 0)")
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated stages to run (default: all of {','.join(STAGES)})",
    )
    p.add_argument("--rtol", type=float, default=1e-5, help="mismatch tolerance (default 1e-5)")
    p.add_argument("--json", metavar="PATH", help="write the failing models' records here")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per model")
    args = p.parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")

    records = []
    t0 = time.time()
    for i in range(args.start, args.start + args.count):
        rec = check_model(i, args.seed, stages, args.rtol)
        records.append(rec)
        bad = [s for s, e in rec.get("errors", {}).items() if not e <= args.rtol]
        bad += [f"{s}!" for s in rec.get("exceptions", {})]
        if args.verbose or bad:
            state = rec.get("degenerate") or ("FAIL " + ",".join(bad) if bad else "ok")
            print(f"[{i:4d}] {state:<24} {rec['model']}", flush=True)
        keras.backend.clear_session()
    print(summarize(records, stages, args.rtol))
    print(f"({time.time() - t0:.0f} s; seed {args.seed}, models {args.start}..{i})")
    fails = failures(records, args.rtol)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "rtol": args.rtol, "failures": fails}, f, indent=1)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
