"""Training speed: ``model.fit`` step time of the masked vs the dense version of a model,
across precision (float32 / bfloat16 mixed) x compilation (Keras' "auto" / XLA).

    python examples/bench_train.py --models fcn conv6 --epochs 4 --steps 8 --json times.json

For each model all configurations (dense and signed, every precision x jit) are built in one
process and trained on the same fixed slice of random data (``--steps`` batches per epoch), one
epoch each in turn, round after round, so load from other processes hits them alike; the first
round (tracing, warm-up) is dropped and the median of the rest is reported.  The last column
compares each signed configuration with the stock dense model at Keras' defaults (float32,
``jit_compile="auto"``): what a user gets from plain ``model.fit``.  The row marked ``*`` is
what ``keras_ssm.train`` picks on this machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import keras
import numpy as np

import keras_ssm
from keras_ssm.training import cpu_description, policy_scope, resolve_jit, resolve_precision

SHAPES = {
    "fcn": (28, 28, 1),
    "conv2": (32, 32, 3),
    "conv4": (32, 32, 3),
    "conv6": (32, 32, 3),
    "conv8": (32, 32, 3),
    "resnet20": (32, 32, 3),
}


def _compiled(name: str, mask: str | None, precision: str, jit: bool | str) -> keras.Model:
    keras.utils.set_random_seed(0)
    with policy_scope(precision):
        model = keras_ssm.models.get(name, mask=mask)
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
        model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=jit)
    return model


def time_configs(
    name: str, configs: list[tuple[str, bool | str]], epochs: int, steps: int, batch: int
) -> dict[tuple[str, bool | str, str], float]:
    """Median seconds per step of every (precision, jit, dense|signed), epochs interleaved."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, *SHAPES[name])).astype("float32")
    y = rng.integers(0, 10, size=steps * batch)
    models = {
        (precision, jit, kind): _compiled(
            name, None if kind == "dense" else "signed", precision, jit
        )
        for precision, jit in configs
        for kind in ("dense", "signed")
    }
    seconds: dict[tuple, list[float]] = {key: [] for key in models}
    for _ in range(epochs):
        for key, model in models.items():
            with policy_scope(key[0]):
                start = time.perf_counter()
                model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
                seconds[key].append((time.perf_counter() - start) / steps)
    return {key: statistics.median(values[1:]) for key, values in seconds.items()}


BEGIN, END = "<!-- training table: begin -->", "<!-- training table: end -->"


def table(paths: list[str]) -> str:
    """The README's table: the rows of ``--json`` files, with each file's CPU and load."""
    import json

    lines = [
        "| model | precision | jit_compile | dense ms/step | signed ms/step | masked/dense "
        "| signed / stock dense (float32, auto) | CPU | load avg (start-end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        load = f"{doc['load']['start']:.1f}-{doc['load']['end']:.1f}"
        cpu = doc.get("cpu", "-")
        for r in doc["rows"]:
            star = " *" if r["default_here"] else ""
            vs = r["signed_over_stock_dense"]
            lines.append(
                f"| {r['model']}{star} | {r['precision']} | {r['jit_compile']} | "
                f"{r['dense_ms']:.1f} | {r['signed_ms']:.1f} | {r['masked_over_dense']:.3f} | "
                f"{'-' if vs is None else f'{vs:.2f}'} | {cpu} | {load} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fcn", "conv6"], choices=sorted(SHAPES))
    parser.add_argument("--epochs", type=int, default=4, help="epochs incl. 1 warm-up (>= 2)")
    parser.add_argument("--steps", type=int, default=8, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--jit", nargs="+", default=["auto", "true"], choices=["auto", "true"])
    parser.add_argument("--json", help="also write the rows (and the machine's load) here")
    parser.add_argument(
        "--table", nargs="+", metavar="JSON", help="print the Markdown table of --json files"
    )
    parser.add_argument(
        "--write", metavar="MARKDOWN", help="with --table: replace the table block of this file"
    )
    args = parser.parse_args(argv)
    if args.table:
        text = table(args.table)
        print(text)
        if args.write:
            from keras_ssm.atomic import replace_block

            try:
                replace_block(args.write, BEGIN, END, text)
            except ValueError as e:
                raise SystemExit(str(e)) from None
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first one is dropped)")
    configs = [(p, True if j == "true" else "auto") for p in args.precision for j in args.jit]

    load_before = os.getloadavg()[0]
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, batch "
        f"{args.batch}, median of {args.epochs - 1} epochs x {args.steps} steps after 1 warm-up "
        f"epoch; 1-minute load average {load_before:.2f} at the start; * = keras_ssm.train's "
        "default here\n"
    )
    rows = []
    print(
        "| model | precision | jit_compile | dense ms/step | signed ms/step | masked/dense "
        "| signed / stock dense (float32, auto) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        conv = keras_ssm.models.is_convolutional(name)
        chosen = (
            resolve_precision("auto", convolutional=conv),
            resolve_jit("auto", convolutional=conv),
        )
        times = time_configs(name, configs, args.epochs, args.steps, args.batch)
        stock = times.get(("float32", "auto", "dense"))
        for precision, jit in configs:
            dense, masked = times[(precision, jit, "dense")], times[(precision, jit, "signed")]
            star = " *" if (precision, jit) == chosen else ""
            vs_stock = f"{masked / stock:.2f}" if stock else "-"
            print(
                f"| {name}{star} | {precision} | {jit} | {1000 * dense:.1f} | "
                f"{1000 * masked:.1f} | {masked / dense:.3f} | {vs_stock} |",
                flush=True,
            )
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "jit_compile": jit,
                    "default_here": bool(star),
                    "dense_ms": round(1000 * dense, 2),
                    "signed_ms": round(1000 * masked, 2),
                    "masked_over_dense": round(masked / dense, 4),
                    "signed_over_stock_dense": round(masked / stock, 4) if stock else None,
                }
            )
    if args.json:
        from keras_ssm.atomic import write_json

        config = {k: v for k, v in vars(args).items() if k != "json"}
        load = {"start": load_before, "end": os.getloadavg()[0]}
        write_json(
            args.json,
            {
                "config": config,
                "cpu_count": os.cpu_count(),
                "cpu": cpu_description(),
                "load": load,
                "keras": keras.__version__,
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
