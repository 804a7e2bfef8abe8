"""The paper's training recipes as data, and the Keras optimizer and callbacks they describe.

>>> import dataclasses
>>> from keras_ssm import recipes
>>> r = recipes.get("conv4", mask="signed")
>>> r.lr, r.wd, r.epochs, r.threshold
(0.05, 0.0005, 100, 0.4)
>>> faster = dataclasses.replace(r, epochs=10)
>>> optimizer = recipes.make_optimizer(faster, steps_per_epoch=390)
>>> recipes.get("resnet20", mask=None).schedule
'plateau'

Two variants: ``"paper"`` is the literal reference configuration; ``"default"`` is the paper's
recipe with the overrides of :data:`DEFAULTS` applied.  A recipe is a frozen
dataclass: change it with ``dataclasses.replace``.

All runs use SGD with Nesterov momentum 0.9, batch 128 and decoupled (SGDW-style) weight decay.
FCN and Conv recipes decay the learning rate and the weight decay together with
``ExponentialDecay(rate 0.9 every 10 epochs, continuous)``.  ResNet recipes use a constant rate
cut on a plateau of the training loss (Keras' ``ReduceLROnPlateau`` cannot change a
``LearningRateSchedule``, so these runs start from a float learning rate) and stop after a
number of cuts (:class:`StopAfterReductions`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import keras

from keras_ssm import initializers, masks
from keras_ssm.models import MODELS, default_dataset
from keras_ssm.schedules import LinearWarmup

__all__ = [
    "DEFAULTS",
    "MODELS",
    "PAPER",
    "Recipe",
    "StopAfterReductions",
    "VARIANTS",
    "get",
    "make_callbacks",
    "make_optimizer",
    "model_kwargs",
]

VARIANTS = ("default", "paper")
SCHEDULES = ("exponential", "plateau", "constant")


@dataclass(frozen=True)
class Recipe:
    """One training configuration (paper defaults for everything not given).

    Attributes:
        model: a name of :data:`keras_ssm.models.MODELS`.
        masked: whether the recipe is for a masked model (``False``: the dense baseline).
        dataset: the paper's dataset for the model.
        lr: the initial learning rate ``lr0``.
        wd: the decoupled weight decay per step at the start, SGDW-style (``w -= wd * w``).
        epochs: the maximum number of epochs.
        schedule: ``"exponential"`` (lr and wd times ``decay_rate ** (epoch / decay_epochs)``),
            ``"plateau"`` (constant, cut by ``plateau_factor`` on a plateau of
            ``plateau_monitor``) or ``"constant"``.
        threshold: the signed mask's threshold fraction (``None`` for dense runs).
        batchnorm: the ResNets' ``batchnorm`` argument (``None`` for models without BN).
        augment: pad-4 random crop and horizontal flip (the paper's CIFAR-100 runs).
        unit_penalty: strength of the group penalty that empties whole hidden units/filters of
            masked runs (:mod:`keras_ssm.structure`; in the ResNets, each block's first
            convolution); 0.0: none (the paper's method).
        weight_scale: the ELUS constant's variance scale for masked runs (1.0: ``c =
            sqrt(3 / fan_in)``, the reference configs'; 2.0: ``sqrt(6 / fan_in)``).
        warmup_epochs: ramp the learning rate (and with it the decoupled weight decay) linearly
            from ``lr / steps`` up to the schedule's value over this many epochs
            (:class:`keras_ssm.schedules.LinearWarmup`); 0.0: none, as in the reference.  Not with
            ``schedule="plateau"``, whose callback needs a float learning rate.
    """

    model: str
    masked: bool
    dataset: str
    lr: float
    wd: float
    epochs: int
    schedule: str = "exponential"
    threshold: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    batch_size: int = 128
    decay_rate: float = 0.9
    decay_epochs: int = 10
    staircase: bool = False
    plateau_monitor: str = "loss"
    plateau_patience: int = 15
    plateau_factor: float = 0.2
    max_reductions: int | None = None
    batchnorm: str | None = None
    augment: bool = False
    weight_scale: float = 1.0
    unit_penalty: float = 0.0
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; allowed: {', '.join(MODELS)}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"Unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}."
            )
        if self.optimizer != "sgd":
            raise ValueError(f"Only optimizer='sgd' is supported; got {self.optimizer!r}.")
        for name in ("lr", "epochs", "batch_size", "decay_epochs", "weight_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)!r}.")
        if self.wd < 0:
            raise ValueError(f"`wd` must be >= 0; got {self.wd!r}.")
        if not self.unit_penalty >= 0:
            raise ValueError(f"`unit_penalty` must be >= 0; got {self.unit_penalty!r}.")
        if not 0 <= self.warmup_epochs < float("inf"):
            raise ValueError(f"`warmup_epochs` must be >= 0; got {self.warmup_epochs!r}.")
        if self.warmup_epochs and self.schedule == "plateau":
            raise ValueError(
                f"`warmup_epochs` needs schedule 'exponential' or 'constant'; got "
                f"warmup_epochs={self.warmup_epochs!r} with schedule 'plateau', whose "
                "ReduceLROnPlateau callback needs a float learning rate."
            )


# ----------------------------------------------------------------------------- the paper's table
def _fcn_conv(model: str, masked: bool) -> Recipe:
    dataset = default_dataset(model)
    if masked:
        lr = 0.04 if model == "conv2" else 0.05
        return Recipe(model, True, dataset, lr=lr, wd=5e-4, epochs=100, threshold=0.4)
    lr, wd = (0.01, 5e-4) if model == "fcn" else (0.008, 7e-4)
    return Recipe(model, False, dataset, lr=lr, wd=wd, epochs=50)


_RESNETS: dict[str, dict[str, Any]] = {
    # lr, wd, epochs, plateau cut, cuts before stopping, signed threshold
    "resnet20": dict(lr=0.3, wd=3e-4, epochs=110, plateau_factor=0.2, max_reductions=5,
                     threshold=0.75),
    "resnet56": dict(lr=0.15, wd=1e-4, epochs=120, plateau_factor=0.1, max_reductions=7,
                     threshold=0.8, augment=True),
    "resnet110": dict(lr=0.1, wd=1e-4, epochs=120, plateau_factor=0.1, max_reductions=7,
                      threshold=0.8, augment=True),
}  # fmt: skip


def _resnet(model: str, masked: bool) -> Recipe:
    values = dict(_RESNETS["resnet20" if model.startswith("resnet20") else model])
    threshold = values.pop("threshold")
    return Recipe(
        model,
        masked,
        default_dataset(model),
        schedule="plateau",
        plateau_monitor="loss",
        plateau_patience=15,
        threshold=threshold if masked else None,
        batchnorm="frozen" if masked else "train",
        **values,
    )


def _paper(model: str, masked: bool) -> Recipe:
    return _resnet(model, masked) if model.startswith("resnet") else _fcn_conv(model, masked)


PAPER: dict[tuple[str, bool], Recipe] = {
    (model, masked): _paper(model, masked) for model in MODELS for masked in (True, False)
}
"""The reference's recipes, keyed by ``(model, masked)``."""

DEFAULTS: dict[tuple[str, bool], dict[str, Any]] = {
    # FCN: ELUS at three times the variance (c = sqrt(9 / fan_in)) and a quarter of the weight
    # decay: 98.05 +- 0.10% at 3.30 +- 0.02% remaining over 3 seeds (paper: 97.48% at 3.77%).
    ("fcn", True): {"wd": 1.25e-4, "weight_scale": 3.0},
    # The dense Conv6 and Conv8 diverge in their first epoch at the reference's lr 0.008
    # (bfloat16, seed 7531: loss 14.3 / 13.6 by step 50, accuracy 10%; Conv6 in float32: NaN
    # within 100 steps).  One epoch of linear warm-up keeps the reference's rate and trains
    # normally (running accuracy 60% / 58% after 800 / 700 steps, past the ramp).
    **{(m, False): {"warmup_epochs": 1.0} for m in ("conv6", "conv8")},
    # The reference freezes the masked ResNets' BatchNorm (unit statistics, effectively identity);
    # by default ours train their statistics and affine parameters (``batchnorm="train"``).
    **{(m, True): {"batchnorm": "train"} for m in MODELS if m.startswith("resnet")},
}
"""Overrides of :data:`PAPER` for the ``"default"`` variant, keyed by ``(model, masked)``.
The ``"paper"`` variant is the reference's values unchanged; see examples/paper/RESULTS.md for
the sweeps behind each override."""


def get(model: str, mask: Any = "signed", variant: str = "default") -> Recipe:
    """The recipe for ``model`` (a name of :data:`MODELS`), masked unless ``mask`` is None.

    Any mask (``"signed"``, ``"binary"``, ``"topk"``, a :class:`keras_ssm.masks.Mask`) gets the
    masked recipe; ``threshold`` only applies to the signed mask (see :func:`model_kwargs`).

    >>> get("resnet56", mask=None, variant="paper").lr
    0.15
    """
    key = model.lower() if isinstance(model, str) else model
    if key not in MODELS:
        raise ValueError(f"Unknown model {model!r}; allowed: {', '.join(MODELS)}.")
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}.")
    masked = mask is not None and mask != "none"
    recipe = PAPER[(key, masked)]
    if variant == "default":
        recipe = dataclasses.replace(recipe, **DEFAULTS.get((key, masked), {}))
    return recipe


def model_kwargs(recipe: Recipe, mask: Any = "signed", **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``keras_ssm.models.get(recipe.model, ...)`` from ``recipe``.

    Forwards ``mask``, the threshold (signed masks only), ``batchnorm`` (ResNets only) and
    ``extra`` (e.g. ``num_classes``, ``input_shape``).

    >>> r = get("resnet20", mask="signed", variant="paper")
    >>> model_kwargs(r, mask="signed", num_classes=10)
    {'mask': 'signed', 'threshold': 0.75, 'batchnorm': 'frozen', 'num_classes': 10}
    """
    kwargs: dict[str, Any] = {"mask": mask}
    if mask is not None and recipe.threshold is not None and masks.get(mask).name == "signed":
        kwargs["threshold"] = recipe.threshold
    if recipe.batchnorm is not None:
        kwargs["batchnorm"] = recipe.batchnorm
    if mask is not None and recipe.weight_scale != 1.0:
        kwargs["weight_initializer"] = initializers.ELUS(scale=recipe.weight_scale)
    if mask is not None and recipe.unit_penalty:
        kwargs["unit_penalty"] = recipe.unit_penalty
    return {**kwargs, **extra}


# ----------------------------------------------------------------------------- optimizer
def learning_rate(
    recipe: Recipe, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's learning rate: an ``ExponentialDecay`` schedule or a float, wrapped in a
    :class:`~keras_ssm.schedules.LinearWarmup` when the recipe warms up
    (``round(warmup_epochs * steps_per_epoch)`` steps, at least one)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = float(recipe.lr)
    if recipe.schedule == "exponential":
        rate = keras.optimizers.schedules.ExponentialDecay(
            recipe.lr,
            decay_steps=recipe.decay_epochs * int(steps_per_epoch),
            decay_rate=recipe.decay_rate,
            staircase=recipe.staircase,
        )
    if recipe.warmup_epochs:
        rate = LinearWarmup(rate, max(1, round(recipe.warmup_epochs * steps_per_epoch)))
    return rate


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.SGD:
    """SGD with Nesterov momentum and decoupled weight decay, as the recipe says.

    The reference uses SGDW, which shrinks each variable by ``wd_t * w`` every step, with
    ``wd_t = wd * decay(t)`` on the same schedule as the learning rate ``lr_t = lr0 * decay(t)``.
    Keras 3 optimizers instead apply ``w -= weight_decay * lr_t * w`` before the gradient step
    (with the learning rate at the current iteration).  Passing ``weight_decay = wd / lr0``
    makes the two identical: ``(wd / lr0) * lr0 * decay(t) = wd * decay(t)``.  Under a plateau
    schedule the decay follows the learning rate's cuts the same way, as SGDW with a decay
    scheduled alongside the rate would.  No variable is exempt (Keras decays every trainable
    variable unless ``exclude_from_weight_decay`` is called), so the scores are decayed: this
    decay is what pulls them into the signed mask's hide band.

    Args:
        recipe: the recipe.
        steps_per_epoch: optimizer steps per epoch (``ceil(train examples / batch size)``).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1; got {steps_per_epoch!r}.")
    return keras.optimizers.SGD(
        learning_rate=learning_rate(recipe, steps_per_epoch),
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.wd / recipe.lr if recipe.wd else None,
    )


# ----------------------------------------------------------------------------- callbacks
class StopAfterReductions(keras.callbacks.Callback):
    """Stops training at the end of the epoch in which the learning rate was cut for the
    ``max_reductions``-th time (Keras' ``ReduceLROnPlateau`` has no such limit).

    It compares the optimizer's learning rate at each epoch end with the last one it saw, so
    place it after the ``ReduceLROnPlateau`` callback.

    >>> callback = StopAfterReductions(5)
    >>> callback.reductions
    0
    """

    def __init__(self, max_reductions: int) -> None:
        super().__init__()
        if not isinstance(max_reductions, int) or max_reductions < 1:
            raise ValueError(f"`max_reductions` must be an int >= 1; got {max_reductions!r}.")
        self.max_reductions = max_reductions
        self.reductions = 0
        self.stopped_epoch: int | None = None
        self._last_lr: float | None = None

    def _lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.reductions, self.stopped_epoch = 0, None
        self._last_lr = self._lr()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        lr = self._lr()
        if self._last_lr is not None and lr < self._last_lr:
            self.reductions += 1
        self._last_lr = lr
        if self.reductions >= self.max_reductions:
            self.stopped_epoch = epoch
            self.model.stop_training = True


def make_callbacks(recipe: Recipe, verbose: int = 0) -> list[keras.callbacks.Callback]:
    """The recipe's schedule callbacks: for ``schedule="plateau"``, ``ReduceLROnPlateau`` on
    the training loss and, if ``max_reductions`` is set, :class:`StopAfterReductions`; else
    none (the exponential schedule lives in the optimizer)."""
    if recipe.schedule != "plateau":
        return []
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.ReduceLROnPlateau(
            monitor=recipe.plateau_monitor,
            factor=recipe.plateau_factor,
            patience=recipe.plateau_patience,
            verbose=verbose,
        )
    ]
    if recipe.max_reductions:
        callbacks.append(StopAfterReductions(recipe.max_reductions))
    return callbacks
