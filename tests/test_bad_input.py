"""Bad input, one table: every case must fail fast with a clear error of a documented type.

Each row is ``(case, expected, pattern)``:

* ``case(ctx)`` either returns an ``argv`` list for ``keras_ssm.cli.main`` (expected: exit
  status 2 and one ``ssm <command>: error: ...`` line on stderr matching ``pattern``), or
  calls the library (expected: it raises ``expected`` with a message matching ``pattern``);
* files the case registers with ``ctx.protect`` must have the same bytes and mtime after it.

Rows marked ``xfail(strict=True)`` are problems found here, to be fixed in the module named in
the reason. What *is* accepted on purpose (not an error) is in ``test_documented_non_errors``:
NaN scores give ``M = 0`` (hidden) under the signed mask's comparisons, ``+-inf`` scores keep or
invert, and outputs stay finite.

Everything runs in-process on tiny models and a 64-example MNIST written to tmp.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fixtures import write_mnist

import keras_ssm
from keras_ssm import cli, data, initializers, masks, models, recipes
from keras_ssm.export import CompactFormatError, compact, load_compact, ort_session, save_compact
from keras_ssm.layers import MaskedDense

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class Ctx:
    """Per-case scratch: tmp folder, a tiny MNIST, a saved masked model, protected files."""

    def __init__(self, tmp: Path, shared: dict[str, Path]) -> None:
        self.tmp = tmp
        self.shared = shared
        self.protected: dict[Path, tuple[bytes, int]] = {}

    def protect(self, path: Path) -> Path:
        self.protected[path] = (path.read_bytes(), path.stat().st_mtime_ns)
        return path

    def file(self, name: str, content: bytes = b"user data, do not touch\n") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return self.protect(path)

    @property
    def mnist(self) -> Path:
        return self.shared["mnist"]

    def run_dir(self, name: str = "run", metrics: bytes | None = None) -> Path:
        """A copy of a finished run (model.keras + metrics.json), files protected."""
        run = self.tmp / name
        run.mkdir()
        self.file(f"{name}/model.keras", self.shared["model"].read_bytes())
        default = json.dumps({"dataset": "mnist"}).encode()
        self.file(f"{name}/metrics.json", default if metrics is None else metrics)
        return run

    def train(self, *extra: str, out: Path | str | None = None) -> list[str]:
        out = self.tmp / "out" if out is None else out
        return [
            "train",
            "--model",
            "fcn",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--verbose",
            "0",
            "--data-dir",
            str(self.mnist),
            *extra,
            "--out",
            str(out),
        ]


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_dir(ctx: Ctx, files: dict[str, bytes] | None = None, skip: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny MNIST with some files replaced or missing."""
    root = ctx.tmp / "mn"
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in IDX_NAMES:
        if name in skip:
            continue
        blob = (files or {}).get(name)
        (folder / name).write_bytes(
            gzip.compress(blob) if blob is not None else (ctx.mnist / "mnist" / name).read_bytes()
        )
    return root


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.dense(x)


def _tiny(*layers: keras.layers.Layer, shape: tuple[int, ...] = (8,)) -> keras.Model:
    return keras.Sequential([keras.Input(shape), *layers])


def _ssm_blob() -> bytes:
    return compact.compact_bytes(_tiny(keras.layers.Dense(3)))


def _ssm_with(edit: Callable[[dict], None]) -> bytes:
    """A valid ``.ssm`` blob whose metadata ``edit`` changed (header and CRC rewritten)."""
    blob = _ssm_blob()
    meta_z = compact._HEAD.unpack_from(blob, 0)[4]
    start = compact._HEAD.size
    meta = json.loads(__import__("zlib").decompress(blob[start : start + meta_z]))
    edit(meta)
    raw = json.dumps(meta).encode()
    zlib = __import__("zlib")
    z = zlib.compress(raw)
    body = compact._HEAD.pack(compact.MAGIC, 1, 0, len(raw), len(z)) + z
    body += blob[start + meta_z : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def _set_units(meta: dict, units: int) -> None:
    meta["model"]["config"]["layers"][1]["config"]["units"] = units


def _lambda_arch(meta: dict) -> None:
    meta["model"]["config"]["layers"][1] = {
        "class_name": "Lambda",
        "module": "keras.layers",
        "config": {
            "name": "evil",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": "print('pwned')", "defaults": None, "closure": None},
            },
        },
    }


def _load_ssm(ctx: Ctx, blob: bytes, name: str = "m.ssm") -> Any:
    return load_compact(ctx.file(name, blob))


# ----------------------------------------------------------------------------- the table
SYS_EXIT = "argparse"  # expected: SystemExit(2) from argparse, before any command runs
EXIT_2 = "exit 2"  # expected: cli.main returns 2 with one error line
XF = pytest.mark.xfail


def cli_case(
    id_: str, argv: Callable[[Ctx], list[str]], pattern: str, parse: bool = False, marks: Any = ()
) -> Any:
    return pytest.param(argv, SYS_EXIT if parse else EXIT_2, pattern, id=id_, marks=marks)


def api_case(
    id_: str, fn: Callable[[Ctx], Any], exc: type[BaseException], pattern: str, marks: Any = ()
) -> Any:
    return pytest.param(fn, exc, pattern, id=id_, marks=marks)


def _train(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ctx.train(*extra)


CASES = [
    # --- argparse: names, choices and ranges (nothing runs) ----------------------------------
    cli_case("no-command", lambda ctx: [], "required: command", parse=True),
    cli_case("unknown-command", lambda ctx: ["fit"], "invalid choice: 'fit'", parse=True),
    cli_case(
        "train-no-model", lambda ctx: ["train", "--out", "x"], "required: --model", parse=True
    ),
    cli_case(
        "train-no-out", lambda ctx: ["train", "--model", "fcn"], "required: --out", parse=True
    ),
    cli_case(
        "unknown-model", _train("--model", "vgg16"), r"invalid choice: 'vgg16'.*fcn", parse=True
    ),
    cli_case(
        "unknown-dataset",
        _train("--dataset", "imagenet"),
        r"invalid choice: 'imagenet'.*mnist",
        parse=True,
    ),
    cli_case(
        "unknown-mask",
        _train("--mask", "ternary"),
        r"invalid choice: 'ternary'.*signed",
        parse=True,
    ),
    cli_case(
        "unknown-recipe", _train("--recipe", "fast"), r"invalid choice: 'fast'.*paper", parse=True
    ),
    cli_case("unknown-strategy", _train("--strategy", "tpu"), r"invalid choice: 'tpu'", parse=True),
    cli_case("verbose-3", _train("--verbose", "3"), r"invalid choice: 3", parse=True),
    cli_case(
        "unknown-option",
        _train("--lr-schedule", "cosine"),
        "unrecognized arguments: --lr-schedule",
        parse=True,
    ),
    cli_case(
        "epochs-0", _train("--epochs", "0"), r"epochs must be in \(0, inf\); got '0'", parse=True
    ),
    cli_case("epochs-negative", _train("--epochs", "-3"), r"epochs must be in .*'-3'", parse=True),
    cli_case(
        "epochs-float", _train("--epochs", "2.5"), r"epochs must be an int; got '2.5'", parse=True
    ),
    cli_case(
        "epochs-text", _train("--epochs", "ten"), r"epochs must be an int; got 'ten'", parse=True
    ),
    cli_case(
        "lr-0", _train("--lr", "0"), r"learning rate must be in \(0, inf\); got '0'", parse=True
    ),
    cli_case(
        "lr-negative", _train("--lr", "-0.1"), r"learning rate must be in .*'-0.1'", parse=True
    ),
    cli_case("lr-nan", _train("--lr", "nan"), r"learning rate must be in .*'nan'", parse=True),
    cli_case(
        "lr-text", _train("--lr", "fast"), r"learning rate must be a float; got 'fast'", parse=True
    ),
    cli_case(
        "lr-inf",
        _train("--lr", "inf"),
        r"learning rate must be .*'inf'",
        parse=True,
    ),
    cli_case(
        "lr-overflow",
        _train("--lr", "1e400"),
        r"learning rate must be .*'1e400'",
        parse=True,
    ),
    cli_case(
        "weight-decay-negative",
        _train("--weight-decay=-1e-4"),
        r"weight decay must be in \[0, inf\); got '-1e-4'",
        parse=True,
    ),
    cli_case(
        "weight-decay-inf",
        _train("--weight-decay", "inf"),
        r"weight decay must be .*'inf'",
        parse=True,
    ),
    cli_case(
        "threshold-0",
        _train("--threshold", "0"),
        r"threshold must be in \(0, 1\); got '0'",
        parse=True,
    ),
    cli_case(
        "threshold-1",
        _train("--threshold", "1"),
        r"threshold must be in \(0, 1\); got '1'",
        parse=True,
    ),
    cli_case(
        "threshold-above-1",
        _train("--threshold", "1.5"),
        r"threshold must be in .*'1.5'",
        parse=True,
    ),
    cli_case(
        "threshold-nan", _train("--threshold", "nan"), r"threshold must be in .*'nan'", parse=True
    ),
    cli_case(
        "batch-size-0", _train("--batch-size", "0"), r"batch size must be in .*'0'", parse=True
    ),
    cli_case(
        "batch-size-float",
        _train("--batch-size", "1e3"),
        r"batch size must be an int; got '1e3'",
        parse=True,
    ),
    cli_case(
        "limit-0", _train("--limit", "0"), r"limit must be in \(0, inf\); got '0'", parse=True
    ),
    cli_case(
        "weight-scale-negative",
        _train("--weight-scale", "-2"),
        r"weight scale must be in .*'-2'",
        parse=True,
    ),
    cli_case("seed-text", _train("--seed", "abc"), r"seed must be an int; got 'abc'", parse=True),
    cli_case(
        "seed-negative",
        _train("--seed", "-1"),
        r"seed must be in \[0, 4.29497e\+09\); got '-1'",
        parse=True,
    ),
    cli_case("eval-no-run", lambda ctx: ["eval"], "required: run", parse=True),
    cli_case(
        "eval-limit-0", lambda ctx: ["eval", "x", "--limit", "0"], r"limit must be in", parse=True
    ),
    # --- ssm train: output folder, data folder ---------------------------------------------
    cli_case(
        "out-under-a-file",
        lambda ctx: ctx.train(out=ctx.file("plain.txt") / "sub"),
        r"--out .*plain.txt/sub is not writable",
    ),
    cli_case(
        "out-is-a-file",
        lambda ctx: ctx.train(out=ctx.file("taken.txt")),
        r"--out .*taken.txt exists and is not a directory",
    ),
    cli_case(
        "out-in-proc",
        lambda ctx: ctx.train(out="/proc/keras_ssm_x"),
        r"--out /proc/keras_ssm_x is not writable",
    ),
    cli_case(
        "out-holds-a-run",
        lambda ctx: ctx.train(out=ctx.run_dir()),
        r"already holds a run \(model.keras, metrics.json\).*--force",
    ),
    cli_case(
        "out-holds-interrupted-run",
        lambda ctx: ctx.train(out=ctx.file("r/backup/x", b"").parent.parent),
        r"holds an interrupted run .*--resume",
    ),
    cli_case(
        "resume-damaged-backup",
        lambda ctx: ctx.train(
            "--resume", out=ctx.file("r/backup/training_metadata.json", b"{not json").parent.parent
        ),
        r"backup .* is damaged .*training_metadata.json",
    ),
    cli_case(
        "multiworker-without-tf-config",
        _train("--strategy", "multiworker"),
        r"multiworker reads the cluster from TF_CONFIG",
    ),
    cli_case(
        "data-dir-empty",
        lambda ctx: ctx.train("--data-dir", str(ctx.tmp)),
        r"No data found for dataset 'mnist'. Looked in: .*mnist: does not exist",
    ),
    cli_case(
        "data-truncated-idx",
        lambda ctx: ctx.train(
            "--data-dir",
            str(
                _mnist_dir(ctx, {"train-images-idx3-ubyte.gz": _idx(np.zeros((64, 28, 28)))[:900]})
            ),
        ),
        r"train-images-idx3-ubyte.gz: truncated",
    ),
    cli_case(
        "data-labels-out-of-range",
        lambda ctx: ctx.train(
            "--data-dir", str(_mnist_dir(ctx, {"t10k-labels-idx1-ubyte.gz": _idx(np.full(32, 12))}))
        ),
        r"labels must lie in \[0, 10\), found \[12, 12\]",
    ),
    # --- ssm eval / summary: runs and .keras files --------------------------------------------
    cli_case(
        "eval-missing-run", lambda ctx: ["eval", str(ctx.tmp / "nothing")], r"no model at .*nothing"
    ),
    cli_case(
        "summary-folder-without-model",
        lambda ctx: ["summary", str(ctx.file("d/notes.txt").parent)],
        r"no model at .*d/model.keras",
    ),
    cli_case(
        "summary-garbage-keras",
        lambda ctx: ["summary", str(ctx.file("g.keras", b"\x00garbage" * 50))],
        r"cannot load .*g.keras",
    ),
    cli_case(
        "summary-truncated-keras",
        lambda ctx: [
            "summary",
            str(
                ctx.file(
                    "t.keras",
                    ctx.shared["model"].read_bytes()[: ctx.shared["model"].stat().st_size // 2],
                )
            ),
        ],
        r"cannot load .*t.keras.*(truncated|corrupt|not a zip)",
    ),
    cli_case(
        "summary-empty-keras",
        lambda ctx: ["summary", str(ctx.file("e.keras", b""))],
        r"cannot load .*e.keras",
    ),
    cli_case(
        "summary-keras-with-bad-config",
        lambda ctx: [
            "summary",
            str(
                ctx.file(
                    "c.keras",
                    _zip(
                        {"config.json": b"{oops", "metadata.json": b"{}", "model.weights.h5": b""}
                    ),
                )
            ),
        ],
        r"cannot load .*c.keras",
    ),
    cli_case(
        "summary-dense-model",
        lambda ctx: ["summary", str(_save(ctx, _tiny(keras.layers.Dense(2)), "dense"))],
        r"has no masked layers",
    ),
    cli_case(
        "eval-unknown-dataset",
        lambda ctx: ["eval", str(ctx.run_dir()), "--dataset", "imagenet"],
        r"Unknown dataset 'imagenet'; expected one of mnist",
    ),
    cli_case(
        "eval-no-metrics-no-dataset",
        lambda ctx: ["eval", str(_save(ctx, _tiny(MaskedDense(2)), "m"))],
        r"no metrics.json naming its dataset; pass --dataset",
    ),
    cli_case(
        "eval-corrupt-metrics",
        lambda ctx: ["eval", str(ctx.run_dir(metrics=b"{garbage"))],
        r"metrics.json",
    ),
    cli_case(
        "eval-wrong-input-shape",
        lambda ctx: [
            "eval",
            str(_save(ctx, _tiny(MaskedDense(10), shape=(32,)), "w")),
            "--dataset",
            "mnist",
            "--data-dir",
            str(ctx.mnist),
            "--verbose",
            "0",
        ],
        r"incompatible|expected .*shape",
    ),
    cli_case(
        "eval-lambda-model-refused",
        lambda ctx: [
            "summary",
            str(_save(ctx, _tiny(keras.layers.Lambda(lambda x: x * 2), MaskedDense(2)), "lam")),
        ],
        r"cannot load .*(unsafe|Lambda|safe_mode)",
    ),
    # --- names: masks, initializers, models, recipes, datasets --------------------------------
    api_case(
        "mask-unknown",
        lambda ctx: masks.get("ternary"),
        ValueError,
        r"Unknown mask 'ternary'. Allowed masks: signed, binary, topk",
    ),
    api_case(
        "mask-not-a-name",
        lambda ctx: masks.get(42),
        ValueError,
        r"Could not interpret mask identifier 42",
    ),
    api_case(
        "mask-bad-argument",
        lambda ctx: masks.get("signed", k=0.3),
        ValueError,
        r"Mask 'signed' got unexpected arguments \['k'\]; its arguments are: threshold",
    ),
    api_case(
        "mask-threshold-1",
        lambda ctx: masks.get("signed", threshold=1.0),
        ValueError,
        r"threshold.* \(0, 1\); received threshold=1.0",
    ),
    api_case(
        "mask-threshold-nan",
        lambda ctx: masks.SignedMask(float("nan")),
        ValueError,
        r"received threshold=nan",
    ),
    api_case("mask-topk-0", lambda ctx: masks.TopKMask(k=0), ValueError, r"received k=0"),
    api_case(
        "mask-binary-seed", lambda ctx: masks.BinaryMask(seed="1"), ValueError, r"received seed='1'"
    ),
    api_case(
        "layer-unknown-mask",
        lambda ctx: MaskedDense(3, mask="nope"),
        ValueError,
        r"Unknown mask 'nope'",
    ),
    api_case(
        "layer-threshold-with-binary",
        lambda ctx: MaskedDense(3, mask="binary", threshold=0.5),
        ValueError,
        r"`threshold` applies only to the 'signed' mask",
    ),
    api_case(
        "layer-lora",
        lambda ctx: MaskedDense(3, lora_rank=4),
        ValueError,
        r"does not support LoRA; got lora_rank=4",
    ),
    api_case(
        "initializer-unknown",
        lambda ctx: initializers.get("he_signed"),
        ValueError,
        r"Unknown initializer 'he_signed'. Allowed: elus, signed_constant, elu_uniform",
    ),
    api_case(
        "initializer-unknown-in-layer",
        lambda ctx: MaskedDense(3, weight_initializer="nope"),
        ValueError,
        r"Unknown initializer 'nope'",
    ),
    api_case(
        "initializer-bad-scale",
        lambda ctx: initializers.ELUS(scale=-1.0),
        ValueError,
        r"`scale` must be a positive number; received -1.0",
    ),
    api_case(
        "initializer-inf-scale",
        lambda ctx: initializers.ELUS(scale=float("inf")),
        ValueError,
        r"scale",
    ),
    api_case(
        "initializer-bad-mode",
        lambda ctx: initializers.SignedConstant(mode="fan_x"),
        ValueError,
        r"Unknown mode 'fan_x'; allowed: fan_in, fan_out, fan_avg",
    ),
    api_case(
        "model-unknown",
        lambda ctx: models.get("resnet1000"),
        ValueError,
        r"Unknown model 'resnet1000'; allowed: fcn, conv2",
    ),
    api_case(
        "model-threshold-without-mask",
        lambda ctx: models.get("fcn", mask=None, threshold=0.4),
        ValueError,
        r"`threshold` needs a mask",
    ),
    api_case(
        "recipe-unknown-model", lambda ctx: recipes.get("vgg"), ValueError, r"Unknown model 'vgg'"
    ),
    api_case(
        "recipe-unknown-variant",
        lambda ctx: recipes.get("fcn", variant="fast"),
        ValueError,
        r"Unknown variant 'fast'; allowed: default, paper",
    ),
    api_case(
        "dataset-unknown",
        lambda ctx: data.load("imagenet"),
        ValueError,
        r"Unknown dataset 'imagenet'; expected one of mnist, fashion_mnist, cifar10",
    ),
    api_case(
        "dataset-bad-split",
        lambda ctx: data.load("mnist", "validation"),
        ValueError,
        r"Unknown split 'validation'; expected one of train, test",
    ),
    api_case(
        "dataset-batch-size-0",
        lambda ctx: data.load("mnist", batch_size=0),
        ValueError,
        r"batch_size must be an integer >= 1, got 0",
    ),
    api_case(
        "dataset-batch-size-bool",
        lambda ctx: data.load("mnist", batch_size=True),
        ValueError,
        r"batch_size must be an integer >= 1, got True",
    ),
    # --- missing, partial and corrupt data folders -------------------------------------------
    api_case(
        "data-dir-missing",
        lambda ctx: data.load_arrays("mnist", ctx.tmp / "nope"),
        data.DataNotFoundError,
        r"(?s)'mnist'.*nope/mnist: does not exist.*To supply",
    ),
    api_case(
        "data-dir-empty-api",
        lambda ctx: data.load_arrays("mnist", ctx.tmp),
        data.DataNotFoundError,
        r"(?s)no idx files.*tensorflow-datasets",
    ),
    api_case(
        "data-dir-partial-idx",
        lambda ctx: data.load_arrays("mnist", _mnist_dir(ctx, skip=IDX_NAMES[2:])),
        data.DataNotFoundError,
        r"incomplete idx files, missing t10k-images-idx3-ubyte\[.gz\]",
    ),
    api_case(
        "data-dir-partial-npz",
        lambda ctx: data.load_arrays("cifar10", _npz_parts(ctx, (1, 3))),
        data.DataNotFoundError,
        r"incomplete npz parts, missing train_part2.npz",
    ),
    api_case(
        "data-bad-idx-magic",
        lambda ctx: data.load_arrays(
            "mnist",
            _mnist_dir(ctx, {"train-labels-idx1-ubyte.gz": b"\x00\x00\x08\x03" + bytes(60)}),
        ),
        data.DataFormatError,
        r"train-labels-idx1-ubyte.gz: bad idx magic number",
    ),
    api_case(
        "data-count-mismatch",
        lambda ctx: data.load_arrays(
            "mnist", _mnist_dir(ctx, {"t10k-labels-idx1-ubyte.gz": _idx(np.zeros(5))})
        ),
        data.DataFormatError,
        r"32 images but 5 labels",
    ),
    api_case(
        "data-npz-wrong-shape",
        lambda ctx: data.load_arrays("cifar10", _npz_parts(ctx, (1,), shape=(28, 28, 3))),
        data.DataFormatError,
        r"x_train is uint8 \(4, 28, 28, 3\), expected uint8",
    ),
    api_case(
        "data-npz-object-array",
        lambda ctx: data.load_arrays(
            "cifar10", _npz_parts(ctx, (1,), labels=np.array([object()] * 4))
        ),
        data.DataFormatError,
        r"y_train .*expected integer labels",
    ),
    # --- supermask / fold: unsupported layers and models -------------------------------------
    api_case(
        "supermask-gru",
        lambda ctx: keras_ssm.supermask(
            _tiny(keras.layers.GRU(4), keras.layers.Dense(2), shape=(5, 3))
        ),
        keras_ssm.UnsupportedLayerError,
        r"cannot mask these layers: gru.*\(GRU\). Maskable layer types: "
        r"Dense, Conv1D, Conv2D, Conv3D, EinsumDense, DepthwiseConv1D, .*Embedding",
    ),
    api_case(
        "supermask-lstm",
        lambda ctx: keras_ssm.supermask(_tiny(keras.layers.LSTM(4), shape=(5, 3))),
        keras_ssm.UnsupportedLayerError,
        r"lstm.*\(LSTM\).*strict=False",
    ),
    api_case(
        "supermask-subclassed",
        lambda ctx: keras_ssm.supermask(_built(Subclassed())),
        keras_ssm.UnsupportedLayerError,
        r"Sequential and functional models only; .* subclassed model \(Subclassed\)",
    ),
    api_case(
        "fold-subclassed",
        lambda ctx: keras_ssm.fold(_built(Subclassed())),
        keras_ssm.UnsupportedLayerError,
        r"fold supports Sequential and functional",
    ),
    api_case(
        "supermask-a-layer",
        lambda ctx: keras_ssm.supermask(keras.layers.Dense(2)),
        TypeError,
        r"supermask expects a keras.Model; received Dense",
    ),
    api_case(
        "supermask-unbuilt",
        lambda ctx: keras_ssm.supermask(keras.Sequential([keras.layers.Dense(2)])),
        ValueError,
        r"is not built; give it an Input first",
    ),
    api_case(
        "supermask-unknown-mask",
        lambda ctx: keras_ssm.supermask(_tiny(keras.layers.Dense(2)), mask="bogus"),
        ValueError,
        r"Unknown mask 'bogus'",
    ),
    api_case(
        "supermask-threshold-2",
        lambda ctx: keras_ssm.supermask(_tiny(keras.layers.Dense(2)), threshold=2),
        ValueError,
        r"received threshold=2",
    ),
    api_case(
        "mask-stats-dense-model",
        lambda ctx: keras_ssm.mask_stats(_tiny(keras.layers.Dense(2))),
        ValueError,
        r"has no masked layers",
    ),
    # --- shapes and dtypes fed to a masked model: Keras' own clear errors ----------------------
    api_case(
        "input-wrong-width",
        lambda ctx: _tiny(MaskedDense(3))(np.zeros((2, 5), "float32")),
        ValueError,
        r"incompatible with the layer: expected axis -1 of input shape to have value 8, "
        r"but received input with shape \(2, 5\)",
    ),
    api_case(
        "input-wrong-channels-conv",
        lambda ctx: _tiny(keras_ssm.MaskedConv2D(2, 3), shape=(8, 8, 1))(
            np.zeros((2, 8, 8, 3), "float32")
        ),
        ValueError,
        r"expected axis -1 of input shape to have value 1, but received input with shape "
        r"\(2, 8, 8, 3\)",
    ),
    api_case(
        "input-wrong-rank-conv",
        lambda ctx: _tiny(keras_ssm.MaskedConv2D(2, 3), shape=(8, 8, 1))(
            np.zeros((8, 8), "float32")
        ),
        ValueError,
        r"Invalid input shape",
    ),
    api_case(
        "fit-wrong-label-shape",
        lambda ctx: _fit_wrong_labels(),
        ValueError,
        r"(?s)Data cardinality is ambiguous.*'x' sizes: 4.*'y' sizes: 5",
    ),
    api_case(
        "input-strings",
        lambda ctx: _tiny(MaskedDense(3))(np.array([["a"] * 8])),
        Exception,
        r"string",
    ),
    # --- .ssm and ONNX files ------------------------------------------------------------------
    api_case(
        "ssm-garbage",
        lambda ctx: _load_ssm(ctx, b"garbage" * 20),
        CompactFormatError,
        r"bad magic bytes \(not a keras_ssm compact file\)",
    ),
    api_case(
        "ssm-empty",
        lambda ctx: _load_ssm(ctx, b""),
        CompactFormatError,
        r"file is truncated \(0 bytes\)",
    ),
    api_case(
        "ssm-truncated",
        lambda ctx: _load_ssm(ctx, _ssm_blob()[:-9]),
        CompactFormatError,
        r"checksum mismatch \(file corrupt or truncated\)",
    ),
    api_case(
        "ssm-bit-flip",
        lambda ctx: _load_ssm(ctx, (lambda b: b[:40] + bytes([b[40] ^ 4]) + b[41:])(_ssm_blob())),
        CompactFormatError,
        r"checksum mismatch",
    ),
    api_case(
        "ssm-future-version",
        lambda ctx: _load_ssm(ctx, _ssm_blob()[:8] + b"\x02\x00" + _ssm_blob()[10:]),
        CompactFormatError,
        r"unsupported .ssm format version 2 \(this reader supports 1\)",
    ),
    api_case(
        "ssm-lambda-architecture",
        lambda ctx: _load_ssm(ctx, _ssm_with(_lambda_arch)),
        CompactFormatError,
        r"cannot rebuild the architecture: .*(unsafe|Lambda|safe_mode)",
    ),
    api_case(
        "ssm-missing-file",
        lambda ctx: load_compact(ctx.tmp / "none.ssm"),
        FileNotFoundError,
        r"none.ssm",
    ),
    api_case(
        "ssm-save-existing-no-overwrite",
        lambda ctx: save_compact(_tiny(keras.layers.Dense(2)), ctx.file("keep.ssm")),
        FileExistsError,
        r"keep.ssm' already exists \(pass overwrite=True",
    ),
    api_case(
        "ssm-save-under-a-file",
        lambda ctx: save_compact(_tiny(keras.layers.Dense(2)), ctx.file("f.txt") / "m.ssm"),
        FileNotFoundError,
        r"directory .*f.txt' does not exist",
    ),
    api_case(
        "onnx-garbage-bytes",
        lambda ctx: ort_session(b"\x08garbage" * 10),
        Exception,
        r"INVALID_PROTOBUF|protobuf parsing failed",
    ),
    api_case(
        "onnx-garbage-file",
        lambda ctx: ort_session(str(ctx.file("g.onnx", b"\xff" * 64))),
        Exception,
        r"INVALID_PROTOBUF|protobuf parsing failed",
    ),
    api_case(
        "onnx-empty-bytes", lambda ctx: ort_session(b""), Exception, r"No graph was found|INVALID"
    ),
    api_case(
        "onnx-missing-file",
        lambda ctx: ort_session(str(ctx.tmp / "none.onnx")),
        Exception,
        r"NO_SUCHFILE.*none.onnx",
    ),
    api_case(
        "onnx-export-existing-no-overwrite",
        lambda ctx: keras_ssm.export.to_onnx(_tiny(keras.layers.Dense(2)), ctx.file("keep.onnx")),
        FileExistsError,
        r"keep.onnx' already exists",
    ),
]


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return out.getvalue()


def _save(ctx: Ctx, model: keras.Model, name: str, compiled: bool = True) -> Path:
    if compiled:
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = ctx.tmp / f"{name}.keras"
    model.save(path)
    return ctx.protect(path)


def _built(model: keras.Model) -> keras.Model:
    model(np.zeros((1, 4), "float32"))
    return model


def _npz_parts(
    ctx: Ctx,
    parts: tuple[int, ...],
    shape: tuple[int, ...] = (32, 32, 3),
    labels: np.ndarray | None = None,
) -> Path:
    folder = ctx.tmp / "c10" / "cifar10"
    folder.mkdir(parents=True)
    x = np.zeros((4, *shape), np.uint8)
    y = np.arange(4) if labels is None else labels
    for i in parts:
        np.savez(folder / f"train_part{i}.npz", x_train=x, y_train=y)
    np.savez(folder / "test.npz", x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.arange(2))
    return folder.parent


def _fit_wrong_labels() -> None:
    model = _tiny(MaskedDense(3, activation="softmax"))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 8), "float32"), np.zeros((5,)), verbose=0)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_input_shared")
    model = _tiny(keras.layers.Flatten(), MaskedDense(10, activation="softmax"), shape=(28, 28, 1))
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(root / "model.keras")
    return {
        "mnist": write_mnist(root / "data", n_train=64, n_test=32),
        "model": root / "model.keras",
    }


@pytest.fixture
def ctx(tmp_path: Path, shared: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Ctx:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds-empty"))
    data.formats.read_cached.cache_clear()
    return Ctx(tmp_path, shared)


@pytest.mark.parametrize("case, expected, pattern", CASES)
def test_bad_input(
    case: Callable[[Ctx], Any],
    expected: Any,
    pattern: str,
    ctx: Ctx,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if expected in (SYS_EXIT, EXIT_2):
        argv = case(ctx)
        if expected == SYS_EXIT:  # if parsing wrongly succeeds, run nothing
            for module in (cli.train, cli.evaluate, cli.summary):
                monkeypatch.setattr(module, "run", lambda args: None)
        capsys.readouterr()
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
            assert expected == SYS_EXIT, "argparse exit where a command error was expected"
        err = capsys.readouterr().err
        assert status == 2, f"exit status {status}; stderr: {err!r}"
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if expected == EXIT_2:
            assert len(err.strip().splitlines()) == 1, f"not one line: {err!r}"
            assert last.startswith(f"ssm {argv[0]}: error: "), err
        else:
            assert re.match(r"ssm( \w+)?: error: ", last), err
        assert re.search(pattern, last), f"{pattern!r} not in {last!r}"
    else:
        with pytest.raises(expected) as info:
            case(ctx)
        assert re.search(pattern, str(info.value)), f"{pattern!r} not in {info.value!s:.2000}"
    for path, (content, mtime) in ctx.protected.items():
        assert path.exists(), f"{path} was deleted"
        assert path.read_bytes() == content, f"{path} was changed"
        assert path.stat().st_mtime_ns == mtime, f"{path} was touched"


def test_eval_of_an_uncompiled_model(ctx: Ctx) -> None:
    model = _tiny(keras.layers.Flatten(), MaskedDense(10, activation="softmax"), shape=(28, 28, 1))
    path = _save(ctx, model, "u", compiled=False)
    argv = ["eval", str(path), "--dataset", "mnist", "--data-dir", str(ctx.mnist), "--verbose", "0"]
    assert cli.main(argv) == 0


def test_table_size() -> None:
    assert len(CASES) >= 50


# ----------------------------------------------------------------------------- not errors
def test_documented_non_errors() -> None:
    """Accepted on purpose, and what happens.

    * NaN scores: every comparison with NaN is false, so the signed mask gives ``M = 0``
      (hidden) and ``mask_stats`` counts the entry as hidden; the kernel entry is ``w0 * 0``,
      so outputs stay finite. We accept this: a NaN score can only come from a diverged
      optimizer, whose loss already shows NaN, and hiding the weight is the safe reading.
    * ``+inf`` / ``-inf`` scores are beyond the threshold: kept (+1) / inverted (-1).
    * Integer or float64 inputs are cast to the layer's float32 (stock Keras behaviour).
    """
    model = _tiny(MaskedDense(4, use_bias=False))
    layer = model.layers[0]
    scores = np.asarray(layer.scores.numpy())
    tau = float(layer.mask_state["tau"].numpy())
    scores[0, 0], scores[1, 0], scores[2, 0] = np.nan, np.inf, -np.inf
    scores[3:, 0] = 0.0  # hidden
    layer.scores.assign(scores)
    mask = np.asarray(keras.ops.convert_to_numpy(layer.compute_mask_values(training=False)))
    assert mask[0, 0] == 0 and mask[1, 0] == 1 and mask[2, 0] == -1
    assert np.all(mask[3:, 0] == 0) and tau > 0
    stats = keras_ssm.mask_stats(model)
    assert stats["hidden"] == int(np.sum(mask == 0)) and 0 < stats["remaining"] < 1
    out = keras.ops.convert_to_numpy(model(np.ones((2, 8), "float32")))
    assert np.all(np.isfinite(out))
    folded = keras_ssm.fold(model)
    assert np.all(np.isfinite(folded.layers[0].kernel.numpy()))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(model(np.ones((2, 8), "int32")))))


def test_huge_architecture_in_ssm_allocates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few edited bytes (``units: 20000000``) must not cost gigabytes before the check."""
    requested: list[tuple[int, ...]] = []
    original = keras.initializers.GlorotUniform.__call__

    def spy(self: Any, shape: Any, dtype: Any = None, **kwargs: Any) -> Any:
        requested.append(tuple(shape))
        return original(self, shape, dtype, **kwargs)

    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__", spy)
    path = tmp_path / "bomb.ssm"
    path.write_bytes(_ssm_with(lambda meta: _set_units(meta, 20_000_000)))
    with pytest.raises(CompactFormatError, match=r"\(8, 20000000\) float32, the file has"):
        load_compact(path, max_elements=1000)
    assert all(np.prod(s) < 10**6 for s in requested), requested
    assert os.path.getsize(path) < 5000
