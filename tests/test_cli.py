"""`ssm train`, `ssm eval`, `ssm summary` end to end on a tiny MNIST."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fixtures import write_mnist

from keras_ssm import cli

pytestmark = pytest.mark.core  # `ssm train` runs on the JAX backend too


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_mnist(tmp_path / "data")
    monkeypatch.setenv("KERAS_SSM_DATA_DIR", str(folder))
    monkeypatch.setenv("KERAS_SSM_OFFLINE", "1")
    return folder


@pytest.mark.parametrize("mask", ["signed", "none"])
def test_train_writes_model_metrics_and_history(
    data_dir: Path, tmp_path: Path, mask: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--model",
        "fcn",
        "--mask",
        mask,
        "--epochs",
        "2",
        "--verbose",
        "0",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    written = sorted(p.name for p in out.iterdir())
    expected = ["history.csv", "metrics.json", "model.keras"]
    assert written == sorted(expected + (["analysis.jsonl"] if mask == "signed" else []))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "epochs",
        "seed",
        "wall_time_s",
        "train_time_s",
        "config",
        "versions",
        "backend",
        "recipe",
        "hardware",
    ):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["seed"] == 7531
    assert metrics["test_accuracy"] > 0.8  # one bright band per class: learnable in 2 epochs
    # the FCN: float32, and XLA on a TensorFlow CPU (test_precision pins the choice itself)
    from keras_ssm.training import resolve_jit, resolve_precision

    picked = (
        resolve_precision("auto", convolutional=False),
        resolve_jit("auto", convolutional=False),
    )
    assert (metrics["precision"], metrics["jit_compile"]) == picked
    assert metrics["precision"] == "float32"
    assert metrics["test_images"] == 128
    if mask == "signed":
        assert 0 < metrics["remaining"] < 1
        assert [row["name"] for row in metrics["layers"]]
    else:
        assert "remaining" not in metrics
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert all(float(row["epoch_time_s"]) > 0 for row in rows)
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--verbose", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # ssm eval measures what metrics.json reports: the float32 model on the same test images
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]
    assert evaluated["test_images"] == metrics["test_images"]
    assert cli.main(["summary", str(out)]) == (0 if mask == "signed" else 2)


def test_existing_run_needs_force(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn", "--epochs", "1", "--verbose", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    before = (out / "model.keras").read_bytes()
    assert cli.main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == before
    assert cli.main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "fcn2", "--out", "x"], "invalid choice: 'fcn2'"),
        (["train", "--model", "fcn", "--mask", "ternary", "--out", "x"], "invalid choice"),
        (["train", "--model", "fcn", "--threshold", "0", "--out", "x"], "threshold must be in"),
        (["train", "--model", "fcn", "--epochs", "-3", "--out", "x"], "epochs must be in"),
        (["train", "--model", "fcn", "--lr", "abc", "--out", "x"], "learning rate must be a"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_missing_or_corrupt_run(tmp_path: Path, capsys) -> None:
    assert cli.main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no model at" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.keras").write_bytes(b"PK\x03\x04 not a zip")
    assert cli.main(["summary", str(tmp_path / "bad")]) == 2
    assert "cannot load" in capsys.readouterr().err


def _train(tmp_path: Path, *flags: str) -> tuple[dict, Path]:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn", "--epochs", "1", "--verbose", "0", "--out", str(out)]
    assert cli.main([*argv, *flags]) == 0
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.parametrize(
    "flags, check",
    [
        (["--jit"], lambda m: m["jit_compile"] is True),
        (["--no-jit"], lambda m: m["jit_compile"] is False),
        (["--precision", "float32"], lambda m: m["precision"] == "float32"),
        (["--precision", "bfloat16"], lambda m: m["precision"] == "bfloat16"),
        (["--augment"], lambda m: m["recipe"]["augment"] is True),
        (["--threshold", "0.3"], lambda m: m["recipe"]["threshold"] == 0.3),
        (["--weight-scale", "2"], lambda m: m["recipe"]["weight_scale"] == 2.0),
        (["--unit-penalty", "0.01"], lambda m: m["recipe"]["unit_penalty"] == 0.01),
        (["--warmup-epochs", "0.5"], lambda m: m["recipe"]["warmup_epochs"] == 0.5),
        (
            ["--recalibrate-batches", "0"],
            lambda m: m["batchnorm_recalibrated"] == {"layers": 0, "batches": 0, "skipped": None},
        ),
        (
            ["--recipe", "paper"],
            lambda m: (m["recipe"]["wd"], m["recipe"]["weight_scale"]) == (5e-4, 1.0),
        ),
        (
            ["--lr", "0.02", "--weight-decay", "0"],
            lambda m: (m["recipe"]["lr"], m["recipe"]["wd"]) == (0.02, 0.0),
        ),
        (
            ["--batch-size", "64", "--limit", "256"],
            lambda m: (
                m["recipe"]["batch_size"] == 64
                and m["test_images"] == 128
                and m["config"]["limit"] == 256
            ),
        ),
    ],
)
def test_train_flags_reach_the_run(
    data_dir: Path, tmp_path: Path, flags: list[str], check: object
) -> None:
    import keras

    if "bfloat16" in flags and keras.backend.backend() != "tensorflow":
        pytest.skip("bfloat16 training is exercised on the TensorFlow backend")
    metrics, _ = _train(tmp_path, *flags)
    assert check(metrics), metrics["recipe"]


def test_weight_scale_and_threshold_reach_the_model(data_dir: Path, tmp_path: Path) -> None:
    import keras
    import numpy as np

    _, out = _train(tmp_path, "--weight-scale", "2", "--threshold", "0.3")
    model = keras.saving.load_model(out / "model.keras")
    for layer in model.layers:
        if hasattr(layer, "w0"):
            w0 = np.abs(keras.ops.convert_to_numpy(layer.w0))
            fan_in = w0.shape[0]
            np.testing.assert_allclose(w0, np.sqrt(6.0 / fan_in), rtol=1e-6)
            assert layer.mask.threshold == 0.3


@pytest.mark.skipif(
    __import__("keras").backend.backend() != "tensorflow", reason="tf.distribute strategy"
)
def test_train_with_the_mirrored_strategy(data_dir: Path, tmp_path: Path) -> None:
    metrics, _ = _train(tmp_path, "--strategy", "mirrored")
    assert metrics["config"]["strategy"] == "mirrored" and metrics["test_accuracy"] > 0.5


def test_train_as_a_library_call(data_dir: Path, tmp_path: Path) -> None:
    """The README's notebook example: keras_ssm.train("fcn", "mnist", epochs=1)."""
    import keras_ssm

    result = keras_ssm.train("fcn", "mnist", epochs=1, verbose=0)
    assert result.run_dir is None and result.metrics["epochs"] == 1
    assert set(result.history) >= {"loss", "accuracy", "remaining", "epoch_time_s"}
    assert result.metrics["test_accuracy"] > 0.5 and 0 < result.metrics["remaining"] < 1
    assert not list(tmp_path.glob("**/*.keras"))  # nothing written without out=


def test_a_diverging_run_stops_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    """A loss that turns NaN stops training at once with an error naming the learning rate;
    no model or metrics are written (and no backup is left to resume from)."""
    import keras_ssm

    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"diverged.*epoch 1.*learning rate 1e\+30"):
        keras_ssm.train(
            "fcn", "mnist", mask=None, epochs=3, lr=1e30, limit=256, out=out, resume=True,
            verbose=0,
        )  # fmt: skip
    assert list(out.iterdir()) == []  # no model, metrics, history or backup


@pytest.mark.parametrize(
    ("steps", "loss", "accuracy", "num_classes", "stops"),
    [
        (50, 14.3, 0.1, 10, True),
        (49, 14.3, 0.1, 10, False),  # too few batches to judge (a --limit run)
        (50, 14.3, 0.21, 10, False),  # learning: above chance
        (50, 6.9, 0.1, 10, False),  # not far above a uniform guess (ln 10 = 2.3)
        (50, 14.3, 0.1, None, False),  # not a classifier the trainer knows
        (400, 14.0, 0.02, 100, True),  # CIFAR-100: 3 ln 100 = 13.8, chance 1%
    ],
)
def test_stuck_at_chance_criterion(
    steps: int, loss: float, accuracy: float, num_classes: int | None, stops: bool
) -> None:
    from keras_ssm.training.callbacks import StopOnDivergence

    callback = StopOnDivergence(num_classes=num_classes)
    callback.set_model(type("Model", (), {"stop_training": False})())
    callback.on_epoch_begin(4)
    for batch in range(steps):
        callback.on_train_batch_end(batch, {"loss": loss})
    callback.on_epoch_end(4, {"loss": loss, "accuracy": accuracy})
    assert callback.model.stop_training is stops
    assert callback.reason == ("stuck" if stops else None)
    if stops:
        assert callback.diverged == (4, steps - 1, loss)


def test_a_run_stuck_at_chance_stops_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    """The finite way bfloat16 diverges: an epoch whose mean loss is far above a uniform guess
    at chance accuracy stops the run with an error naming the warm-up; nothing is written."""
    import keras

    import keras_ssm

    class Saturate(keras.callbacks.Callback):  # what the dense Conv6 at lr 0.008 logged
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs.update(loss=14.3, accuracy=0.1)

    out = tmp_path / "run"
    with pytest.raises(
        FloatingPointError,
        match=r"diverged: after epoch 1 .* 14\.3 .*chance.*weight scale 3.*warmup_epochs=.*"
        r"--weight-scale",  # the FCN's default ELUS scale is 3: the message names it
    ):
        keras_ssm.train(
            "fcn",
            "mnist",
            epochs=3,
            batch_size=8,
            limit=512,
            out=out,
            resume=True,
            callbacks=[Saturate()],
            verbose=0,
        )  # 64 steps per epoch: the check needs 50
    # a masked run: not even its per-epoch mask records (analysis.jsonl) stay
    assert list(out.iterdir()) == []


def test_train_recalibrates_batchnorm_after_fit(data_dir: Path) -> None:
    """A ResNet's BatchNorm statistics are recomputed for the final network (the default), or
    kept as training left them; models without BatchNorm are not touched."""
    import keras
    import numpy as np

    import keras_ssm

    def run(batches: int) -> keras_ssm.training.TrainResult:
        return keras_ssm.train(
            "resnet20",
            "mnist",
            epochs=1,
            batch_size=64,
            limit=256,
            verbose=0,
            recalibrate_batches=batches,
        )

    kept, recalibrated = run(0), run(3)
    assert kept.metrics["batchnorm_recalibrated"] == {"layers": 0, "batches": 0, "skipped": None}
    info = recalibrated.metrics["batchnorm_recalibrated"]
    assert info["layers"] > 10 and info["batches"] == 3 and info["skipped"] is None

    def means(result: keras_ssm.training.TrainResult) -> list[np.ndarray]:
        return [
            keras.ops.convert_to_numpy(v) for v in result.model.weights if "moving_mean" in v.path
        ]

    # same seed, same training: only the moving statistics differ
    assert any(
        not np.array_equal(a, b) for a, b in zip(means(kept), means(recalibrated), strict=True)
    )
    fcn = keras_ssm.train("fcn", "mnist", epochs=1, verbose=0, limit=256)
    assert fcn.metrics["batchnorm_recalibrated"]["layers"] == 0
    with pytest.raises(ValueError, match="recalibrate_batches must be a non-negative integer"):
        keras_ssm.train("fcn", "mnist", recalibrate_batches=-1)
