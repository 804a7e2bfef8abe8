"""Max-pooling before the activation, timed under onnxruntime: what
:func:`keras_ssm.export.onnx.pools_before_activations` buys a convnet's ONNX file.

For each model (a compact ``.ssm`` of a signed run, already folded and shrunk, its filters
padded to onnxruntime's channel block as ``ssm export`` does (``align_channels``), or a dense
zoo model with random weights: speed does not depend on the values), the ONNX graph is written
twice: as every file of ``keras_ssm.export`` is (``rewrite_for_onnxruntime``), and with every
rewrite but the pool's (``Conv -> Elu -> MaxPool`` as Keras computes it).  Both run under
default session options on the same random images at batch 1 and 64, in interleaved rounds;
their outputs must be equal bit for bit.  The numbers quoted in ``keras_ssm/export/onnx.py``
and ``export/RESULTS_pool_timing.md`` come from this script::

    python export/pool_timing.py --dense conv6 --rounds 5 \\
        --ssm examples/paper/results/conv6_signed_default_s7531/model.ssm
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np

BATCHES = (1, 64)
KINDS = ("pool first (default)", "activation first")


def protos(model: Any) -> dict[str, bytes]:
    """The serialized ONNX graph of ``model`` with and without the pool rewrite."""
    from keras_ssm.export import onnx as onnx_mod

    plain, _ = onnx_mod.onnx_bytes(model, rewrite=False)  # one conversion, both graphs
    with_pool = onnx_mod.rewrite_for_onnxruntime(plain)
    without = onnx_mod.matmuls_as_gemm(plain)
    return {KINDS[0]: with_pool.SerializeToString(), KINDS[1]: without.SerializeToString()}


def time_model(model: Any, rounds: int, runs: int, seed: int = 0) -> dict[str, dict[int, float]]:
    """Median microseconds per ``session.run`` of each kind at each batch size."""
    from keras_ssm.export.runtime import ort_session, timed

    sessions = {kind: ort_session(blob) for kind, blob in protos(model).items()}
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    feeds = {b: {"input": rng.normal(size=(b, *shape)).astype("float32")} for b in BATCHES}
    for b, feed in feeds.items():
        outs = [s.run(None, feed)[0] for s in sessions.values()]
        if not np.array_equal(outs[0], outs[1]):
            raise AssertionError(f"the pool rewrite changed the outputs at batch {b}")
    cells: dict[str, dict[int, list[float]]] = {k: {b: [] for b in BATCHES} for k in KINDS}
    for _ in range(rounds):
        for b, feed in feeds.items():
            for kind, sess in sessions.items():
                times = timed(lambda s=sess, f=feed: s.run(None, f), runs, warmup=10)
                cells[kind][b].append(statistics.median(times))
    return {k: {b: statistics.median(v) for b, v in per.items()} for k, per in cells.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssm", action="append", default=[], help="compact file of a signed run")
    p.add_argument("--dense", action="append", default=[], help="zoo model name (dense)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=50, help="timed runs per cell and round")
    a = p.parse_args(argv)
    if not a.ssm and not a.dense:
        p.error("give at least one --ssm file or --dense model name")
    import keras

    import keras_ssm
    from keras_ssm.export import align_channels, load_compact

    models = {path: align_channels(load_compact(path))[0] for path in a.ssm}
    for name in a.dense:
        keras.utils.set_random_seed(0)
        models[f"{name} (dense)"] = keras_ssm.models.get(name, mask=None)
    print(f"median us per session.run, default session options, {a.rounds} rounds x {a.runs}")
    print("| model | batch | pool first (default) | activation first | speed-up |")
    print("|---|---|---|---|---|")
    for label, model in models.items():
        t = time_model(model, a.rounds, a.runs)
        for b in BATCHES:
            first, after = t[KINDS[0]][b], t[KINDS[1]][b]
            print(f"| {label} | {b} | {first:.1f} | {after:.1f} | {after / first:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
