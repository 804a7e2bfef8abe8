"""Training recipes: the paper's table, the SGDW mapping, the plateau callbacks."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from conftest import numpy
from keras_ssm import models, recipes
from keras_ssm.layers import MaskedDense
from keras_ssm.schedules import LinearWarmup

pytestmark = pytest.mark.core

CONV = ("conv4", "conv6", "conv8")
RESNET20 = ("resnet20", "resnet20x2", "resnet20x3")

# (model, masked): lr, wd, epochs, threshold
PAPER_TABLE = {
    ("fcn", True): (0.05, 5e-4, 100, 0.4),
    ("conv2", True): (0.04, 5e-4, 100, 0.4),
    **{(m, True): (0.05, 5e-4, 100, 0.4) for m in CONV},
    **{(m, True): (0.3, 3e-4, 110, 0.75) for m in RESNET20},
    ("resnet56", True): (0.15, 1e-4, 120, 0.8),
    ("resnet110", True): (0.1, 1e-4, 120, 0.8),
    ("fcn", False): (0.01, 5e-4, 50, None),
    **{(m, False): (0.008, 7e-4, 50, None) for m in ("conv2", *CONV)},
    **{(m, False): (0.3, 3e-4, 110, None) for m in RESNET20},
    ("resnet56", False): (0.15, 1e-4, 120, None),
    ("resnet110", False): (0.1, 1e-4, 120, None),
}

# What the "default" variant changes, as examples/paper/RESULTS.md documents it: FCN, ELUS
# scale 3 (c = sqrt(9 / fan_in)) and weight decay 1.25e-4; masked ResNets, batchnorm="train";
# dense Conv6/Conv8, one epoch of learning-rate warm-up.
DEFAULT_OVERRIDES: dict[tuple[str, bool], dict[str, object]] = {
    ("fcn", True): {"wd": 1.25e-4, "weight_scale": 3.0},
    ("conv6", False): {"warmup_epochs": 1.0},
    ("conv8", False): {"warmup_epochs": 1.0},
    **{(m, True): {"batchnorm": "train"} for m in (*RESNET20, "resnet56", "resnet110")},
}


def test_every_model_has_both_recipes() -> None:
    assert recipes.MODELS == models.MODELS
    assert set(PAPER_TABLE) == set(recipes.PAPER)


@pytest.mark.parametrize(("model", "masked"), list(PAPER_TABLE))
def test_paper_values(model: str, masked: bool) -> None:
    recipe = recipes.get(model, mask="signed" if masked else None, variant="paper")
    assert (recipe.lr, recipe.wd, recipe.epochs, recipe.threshold) == PAPER_TABLE[model, masked]
    assert (recipe.model, recipe.masked) == (model, masked)
    assert (recipe.optimizer, recipe.momentum, recipe.nesterov) == ("sgd", 0.9, True)
    assert recipe.batch_size == 128
    assert recipe.dataset == models.default_dataset(model)
    assert recipe.augment == (recipe.dataset == "cifar100")


@pytest.mark.parametrize("model", ["fcn", "conv2", "conv8"])
def test_fcn_conv_use_exponential_decay(model: str) -> None:
    recipe = recipes.get(model)
    assert recipe.schedule == "exponential"
    assert (recipe.decay_rate, recipe.decay_epochs, recipe.staircase) == (0.9, 10, False)
    assert recipe.batchnorm is None


@pytest.mark.parametrize(
    ("model", "factor", "reductions"),
    [("resnet20", 0.2, 5), ("resnet20x3", 0.2, 5), ("resnet56", 0.1, 7), ("resnet110", 0.1, 7)],
)
@pytest.mark.parametrize("mask", ["signed", None])
def test_resnets_use_the_plateau(model: str, factor: float, reductions: int, mask: str) -> None:
    recipe = recipes.get(model, mask=mask, variant="paper")
    assert recipe.schedule == "plateau"
    assert (recipe.plateau_monitor, recipe.plateau_patience) == ("loss", 15)
    assert (recipe.plateau_factor, recipe.max_reductions) == (factor, reductions)
    assert recipe.batchnorm == ("frozen" if mask else "train")


@pytest.mark.parametrize("mask", ["binary", "topk"])
def test_any_mask_gets_the_masked_recipe(mask: str) -> None:
    assert recipes.get("conv4", mask=mask) == recipes.get("conv4", mask="signed")


def test_default_variant_is_paper_plus_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for (model, masked), (lr, wd, epochs, threshold) in PAPER_TABLE.items():
        mask = "signed" if masked else None
        overrides = DEFAULT_OVERRIDES.get((model, masked), {})
        default = recipes.get(model, mask=mask)
        paper = recipes.get(model, mask=mask, variant="paper")
        expected = {"lr": lr, "wd": wd, "epochs": epochs, "threshold": threshold, **overrides}
        assert {k: getattr(default, k) for k in expected} == expected, (model, masked)
        changed = {k: v for k, v in dataclasses.asdict(default).items() if getattr(paper, k) != v}
        assert changed == overrides, (model, masked)  # nothing else differs from the paper
        assert paper.weight_scale == 1.0  # the reference constant, c = sqrt(3 / fan_in)
    monkeypatch.setitem(recipes.DEFAULTS, ("conv4", True), {"lr": 0.1, "epochs": 3})
    tuned = recipes.get("conv4")
    assert (tuned.lr, tuned.epochs) == (0.1, 3)
    assert recipes.get("conv4", variant="paper").lr == 0.05


def test_default_fcn_recipe_is_the_documented_one() -> None:
    """examples/paper/RESULTS.md: "FCN, default recipe: ELUS scale 3 (c = sqrt(9 / fan_in)),
    weight decay 1.25e-4, lr 0.05, threshold 0.4, 100 epochs; and the dense baseline (the
    paper's: lr 0.01, wd 5e-4, 50 epochs)"."""
    r = recipes.get("fcn")
    assert (r.weight_scale, r.wd, r.lr, r.threshold, r.epochs) == (3.0, 1.25e-4, 0.05, 0.4, 100)
    assert (r.schedule, r.batch_size, r.dataset) == ("exponential", 128, "mnist")
    dense = recipes.get("fcn", mask=None)
    assert (dense.lr, dense.wd, dense.epochs, dense.weight_scale) == (0.01, 5e-4, 50, 1.0)


@pytest.mark.parametrize(("variant", "scale"), [("default", 3.0), ("paper", 1.0)])
def test_weight_scale_reaches_w0(variant: str, scale: float) -> None:
    """The model built from the recipe has |w0| = sqrt(3 * weight_scale / fan_in) everywhere."""
    recipe = recipes.get("fcn", variant=variant)
    assert recipe.weight_scale == scale
    model = models.get("fcn", **recipes.model_kwargs(recipe, mask="signed"))
    layers = [layer for layer in model.layers if hasattr(layer, "w0")]
    assert [tuple(layer.w0.shape) for layer in layers] == [(784, 300), (300, 100), (100, 10)]
    for layer in layers:
        w0 = numpy(layer.w0)
        c = np.sqrt(3.0 * scale / w0.shape[0])
        np.testing.assert_allclose(np.abs(w0), c, rtol=1e-6)
        assert 0.4 < np.mean(w0 > 0) < 0.6  # random signs


def test_recipe_is_frozen_and_replaceable() -> None:
    recipe = recipes.get("fcn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lr = 1.0  # type: ignore[misc]
    assert dataclasses.replace(recipe, lr=0.2).lr == 0.2
    with pytest.raises(ValueError, match="schedule"):
        dataclasses.replace(recipe, schedule="cosine")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("vgg16",), "allowed: fcn, conv2, .*resnet110"),
        (("fcn", "signed", "tuned"), "allowed: default, paper"),
    ],
)
def test_unknown_names(args: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        recipes.get(*args)


@pytest.mark.parametrize(
    ("model", "mask", "expected"),
    [
        ("fcn", "signed", {"mask": "signed", "threshold": 0.4}),
        ("fcn", "binary", {"mask": "binary"}),
        ("conv2", None, {"mask": None}),
        ("resnet56", "signed", {"mask": "signed", "threshold": 0.8, "batchnorm": "frozen"}),
        ("resnet20", None, {"mask": None, "batchnorm": "train"}),
    ],
)
def test_model_kwargs(model: str, mask: str | None, expected: dict[str, object]) -> None:
    recipe = recipes.get(model, mask=mask, variant="paper")
    assert recipes.model_kwargs(recipe, mask=mask) == expected
    assert recipes.model_kwargs(recipe, mask=mask, num_classes=3)["num_classes"] == 3


@pytest.mark.parametrize(("model", "mask"), [("fcn", "signed"), ("resnet20", "signed")])
def test_model_kwargs_build_the_model(model: str, mask: str) -> None:
    recipe = recipes.get(model, mask=mask)
    built = models.get(model, **recipes.model_kwargs(recipe, mask=mask, input_shape=(8, 8, 3)))
    assert built.name == model


# ----------------------------------------------------------------------------- optimizer
def test_exponential_optimizer() -> None:
    recipe = recipes.get("conv4")
    optimizer = recipes.make_optimizer(recipe, steps_per_epoch=390)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == 0.9
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    config = schedule.get_config()
    assert config["initial_learning_rate"] == 0.05
    assert (config["decay_steps"], config["decay_rate"], config["staircase"]) == (3900, 0.9, False)
    assert optimizer.weight_decay == pytest.approx(5e-4 / 0.05)


def test_plateau_optimizer_uses_a_float_rate() -> None:
    optimizer = recipes.make_optimizer(recipes.get("resnet20"), steps_per_epoch=10)
    assert float(numpy(optimizer.learning_rate)) == pytest.approx(0.3)
    assert optimizer.weight_decay == pytest.approx(3e-4 / 0.3)


def test_zero_weight_decay_is_none() -> None:
    recipe = dataclasses.replace(recipes.get("fcn"), wd=0.0)
    assert recipes.make_optimizer(recipe, steps_per_epoch=5).weight_decay is None


def decay_one_step(optimizer: keras.optimizers.Optimizer, variable: keras.Variable) -> float:
    """Relative change of ``variable`` after one step with a zero gradient."""
    before = numpy(variable).copy()
    optimizer.apply_gradients([(keras.ops.zeros(variable.shape), variable)])
    return float(np.mean(numpy(variable) / before))


@pytest.mark.parametrize("step", [0, 1, 2345])
def test_sgdw_mapping_shrinks_by_wd_times_decay(step: int) -> None:
    """One step on a zero gradient multiplies the scores by exactly 1 - wd * decay(t)."""
    steps_per_epoch = 100
    recipe = recipes.get("conv4")  # lr 0.05, wd 5e-4
    layer = MaskedDense(4)
    layer.build((None, 6))
    optimizer = recipes.make_optimizer(recipe, steps_per_epoch)
    optimizer.build([layer.scores])
    optimizer.iterations.assign(step)
    decay = 0.9 ** (step / (10 * steps_per_epoch))
    factor = decay_one_step(optimizer, layer.scores)
    assert factor == pytest.approx(1 - 5e-4 * decay, abs=1e-7)


def test_weight_decay_follows_a_plateau_cut() -> None:
    recipe = recipes.get("resnet20")  # lr 0.3, wd 3e-4
    variable = keras.Variable(np.full((5,), 2.0, "float32"), name="scores")
    optimizer = recipes.make_optimizer(recipe, steps_per_epoch=10)
    optimizer.build([variable])
    assert decay_one_step(optimizer, variable) == pytest.approx(1 - 3e-4, abs=1e-7)
    optimizer.learning_rate = 0.3 * 0.2  # what ReduceLROnPlateau does
    assert decay_one_step(optimizer, variable) == pytest.approx(1 - 3e-4 * 0.2, abs=1e-7)


# ----------------------------------------------------------------------------- warm-up
def test_linear_warmup_ramps_then_follows_the_schedule() -> None:
    inner = keras.optimizers.schedules.ExponentialDecay(0.008, decay_steps=3910, decay_rate=0.9)
    warm = LinearWarmup(inner, warmup_steps=391)
    for step in (0, 1, 100, 389, 390, 391, 5000):
        expected = float(numpy(inner(step))) * min(1.0, (step + 1) / 391)
        assert float(numpy(warm(step))) == pytest.approx(expected, rel=1e-6), step


@pytest.mark.parametrize(
    ("epochs", "steps_per_epoch", "steps"), [(1.0, 391, 391), (0.5, 391, 196), (1e-4, 10, 1)]
)
def test_warmup_recipe_optimizer(epochs: float, steps_per_epoch: int, steps: int) -> None:
    recipe = dataclasses.replace(recipes.get("conv4", mask=None), warmup_epochs=epochs)
    schedule = recipes.make_optimizer(recipe, steps_per_epoch)._learning_rate
    assert isinstance(schedule, LinearWarmup)
    assert schedule.warmup_steps == steps
    assert isinstance(schedule.schedule, keras.optimizers.schedules.ExponentialDecay)
    assert float(numpy(schedule(0))) == pytest.approx(0.008 / steps, rel=1e-6)


def test_warmup_on_a_constant_schedule() -> None:
    recipe = dataclasses.replace(
        recipes.get("conv4", mask=None), schedule="constant", warmup_epochs=2.0
    )
    schedule = recipes.make_optimizer(recipe, steps_per_epoch=5)._learning_rate
    rates = [float(numpy(schedule(step))) for step in range(12)]
    np.testing.assert_allclose(rates, [0.008 * min(1, (s + 1) / 10) for s in range(12)], 1e-6)


@pytest.mark.parametrize("step", [0, 99, 390, 2000])
def test_weight_decay_warms_up_with_the_rate(step: int) -> None:
    """SGDW's decay follows the warmed-up rate: one zero-gradient step multiplies by exactly
    1 - wd * decay(t) * min(1, (t + 1) / warm-up steps)."""
    recipe = recipes.get("conv6", mask=None)  # lr 0.008, wd 7e-4, one epoch of warm-up
    variable = keras.Variable(np.full((5,), 2.0, "float32"), name="kernel")
    optimizer = recipes.make_optimizer(recipe, steps_per_epoch=391)
    optimizer.build([variable])
    optimizer.iterations.assign(step)
    ramp = min(1.0, (step + 1) / 391) * 0.9 ** (step / 3910)
    assert decay_one_step(optimizer, variable) == pytest.approx(1 - 7e-4 * ramp, abs=1e-7)


def test_warmup_survives_a_keras_file(tmp_path) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    recipe = recipes.get("conv6", mask=None)
    model.compile(recipes.make_optimizer(recipe, steps_per_epoch=7), "mse")
    model.fit(np.ones((8, 3), "float32"), np.zeros((8, 2), "float32"), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    schedule = loaded.optimizer._learning_rate
    assert isinstance(schedule, LinearWarmup)
    assert schedule.get_config() == model.optimizer._learning_rate.get_config()
    assert float(numpy(schedule(3))) == pytest.approx(0.008 * 0.9 ** (3 / 70) * 4 / 7, rel=1e-6)

    import subprocess
    import sys

    code = (  # a user's fresh process: the schedule is known after `import keras_ssm` alone
        f"import keras, keras_ssm; m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}); "
        "print(type(m.optimizer._learning_rate).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("LinearWarmup")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"warmup_epochs": float("nan")}, "warmup_epochs"),
        ({"warmup_epochs": float("inf")}, "warmup_epochs"),
        ({"warmup_epochs": 1.0, "schedule": "plateau"}, "plateau"),
    ],
)
def test_warmup_recipe_validates(change: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(recipes.get("conv4", mask=None), **change)


@pytest.mark.parametrize(
    ("schedule", "steps", "match"),
    [
        (0.1, 0, "warmup_steps"),
        (0.1, 2.5, "warmup_steps"),
        (0.1, True, "warmup_steps"),
        (-0.1, 3, "positive"),
        ("fast", 3, "schedule"),
    ],
)
def test_linear_warmup_validates(schedule: object, steps: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinearWarmup(schedule, warmup_steps=steps)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- callbacks
def test_exponential_recipes_need_no_callbacks() -> None:
    assert recipes.make_callbacks(recipes.get("conv6")) == []


def test_plateau_callbacks() -> None:
    plateau, stop = recipes.make_callbacks(recipes.get("resnet56"))
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert (plateau.monitor, plateau.factor, plateau.patience) == ("loss", 0.1, 15)
    assert isinstance(stop, recipes.StopAfterReductions) and stop.max_reductions == 7


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_stop_after_reductions_validates(bad: object) -> None:
    with pytest.raises(ValueError, match="max_reductions"):
        recipes.StopAfterReductions(bad)  # type: ignore[arg-type]


def test_stop_after_reductions_on_a_toy_fit() -> None:
    """A learning rate too small to move the loss: a plateau every epoch after the first."""
    recipe = dataclasses.replace(
        recipes.get("resnet20"), lr=1e-9, wd=0.0, plateau_patience=1, max_reductions=3
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        recipes.make_optimizer(recipe, steps_per_epoch=1), "sparse_categorical_crossentropy"
    )
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 2
    callbacks = recipes.make_callbacks(recipe)
    history = model.fit(x, y, batch_size=16, epochs=20, callbacks=callbacks, verbose=0)
    stop = callbacks[-1]
    assert stop.reductions == 3 and stop.stopped_epoch == 3
    assert len(history.history["loss"]) == 4  # cuts at the ends of epochs 1, 2 and 3
    final_lr = float(numpy(model.optimizer.learning_rate))
    assert final_lr == pytest.approx(1e-9 * 0.2**3, rel=1e-5)
