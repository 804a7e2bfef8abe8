"""The paper's model zoo, dense (the baseline) or masked, as functional ``keras.Model`` s.

>>> import keras_ssm
>>> model = keras_ssm.models.fcn(mask="signed", threshold=0.4)
>>> model.name, model.output_shape
('fcn', (None, 10))
>>> keras_ssm.models.kernel_count(model)
266200
>>> keras_ssm.models.get("resnet20x2", mask=None).name
'resnet20x2'

Every model follows the paper: ELU activations, no biases, ``'same'`` padding, 3x3 convolutions,
2x2 max-pooling with stride 2 and a softmax output.  ``mask=None`` builds the dense baseline
(stock ``Dense``/``Conv2D`` initialized with ``"elu_uniform"``); any mask (``"signed"``,
``"binary"``, ``"topk"`` or a :class:`keras_ssm.masks.Mask`) builds the masked model, whose
frozen weights use ``weight_initializer`` (default ``"elus"``) and whose scores use
``score_initializer``.

The paper's parameter counts are the number of kernel weights (the mask entries of a masked
model; BatchNorm variables are not counted): :func:`kernel_count` returns it for any model, and
for the dense FCN and Conv models it equals ``model.count_params()``.

| model | kernel weights | default input, classes |
|---|---|---|
| ``fcn`` | 266,200 | (28, 28, 1), 10 |
| ``conv2``, ``conv4`` | 4,300,992, 2,425,024 | (32, 32, 3), 10 |
| ``conv6``, ``conv8`` | 2,261,184, 5,275,840 | (32, 32, 3), 10 |
| ``resnet20`` (width 1, 2, 3) | 248,624, 992,352, 2,231,184 | (32, 32, 3), 10 |
| ``resnet56``, ``resnet110`` | 834,992, 1,705,904 | (32, 32, 3), 100 |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks
from keras_ssm.layers import MaskedConv2D, MaskedDense, is_masked
from keras_ssm.structure import UnitPenalty
from keras_ssm.wrap import iter_layers

__all__ = [
    "BATCHNORM",
    "MODELS",
    "conv2",
    "conv4",
    "conv6",
    "conv8",
    "default_dataset",
    "fcn",
    "get",
    "kernel_count",
    "resnet20",
    "resnet56",
    "resnet110",
]

MaskArg = str | dict[str, Any] | masks.Mask | None
Shape = tuple[int, ...]

MODELS = (
    "fcn",
    "conv2",
    "conv4",
    "conv6",
    "conv8",
    "resnet20",
    "resnet20x2",
    "resnet20x3",
    "resnet56",
    "resnet110",
)
"""Names :func:`get` accepts; ``resnet20x2``/``resnet20x3`` are ``resnet20(width=2|3)``."""

BATCHNORM = ("train", "stats", "frozen")
"""``batchnorm`` choices of the ResNets (see :func:`resnet20`)."""

MNIST_SHAPE: Shape = (28, 28, 1)
CIFAR_SHAPE: Shape = (32, 32, 3)

_DATASETS = {"fcn": "mnist", "resnet56": "cifar100", "resnet110": "cifar100"}


def default_dataset(name: str) -> str:
    """The dataset the paper trains model ``name`` on: mnist, cifar10 or cifar100."""
    return _DATASETS.get(_check_name(name), "cifar10")


def kernel_count(model: keras.Model) -> int:
    """The paper's parameter count: kernel weights of every Dense/Conv layer (masked or not).

    For a masked layer this is its number of mask entries; BatchNorm variables are not counted.
    """
    total = 0
    for layer in iter_layers(model):
        if is_masked(layer):
            total += math.prod(layer.scores.shape)
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            total += math.prod(layer.kernel.shape)
    return int(total)


# ----------------------------------------------------------------------------- layer factory
class _Layers:
    """Builds the Dense/Conv2D layers of one model: stock (dense) or masked, same arguments."""

    def __init__(
        self,
        mask: MaskArg,
        threshold: float | None,
        weight_initializer: Any,
        score_initializer: Any,
        unit_penalty: float = 0.0,
    ) -> None:
        if mask is None and threshold is not None:
            raise ValueError("`threshold` needs a mask; got mask=None (the dense baseline).")
        if mask is None and unit_penalty:
            raise ValueError("`unit_penalty` needs a mask; got mask=None (the dense baseline).")
        # the hidden layers' scores get the group penalty (the output layer's units are classes)
        self.penalty = UnitPenalty(unit_penalty) if unit_penalty else None
        self.mask = mask
        self.masked_kwargs: dict[str, Any] = {"mask": mask, "score_initializer": score_initializer}
        if threshold is not None:
            self.masked_kwargs["threshold"] = threshold
        if weight_initializer is not None:
            self.masked_kwargs["weight_initializer"] = weight_initializer
        self.weight_initializer = weight_initializer or "elu_uniform"

    def _kwargs(self) -> dict[str, Any]:
        if self.mask is None:
            init = self.weight_initializer
            init = ssm_initializers.get(init) if isinstance(init, str) else init
            return {"kernel_initializer": init}
        return dict(self.masked_kwargs)

    def _hidden_kwargs(self) -> dict[str, Any]:
        kwargs = self._kwargs()
        if self.penalty is not None:
            kwargs["kernel_regularizer"] = self.penalty
        return kwargs

    def dense(
        self, units: int, activation: str, name: str, hidden: bool = True
    ) -> keras.layers.Layer:
        cls = keras.layers.Dense if self.mask is None else MaskedDense
        kwargs = self._hidden_kwargs() if hidden else self._kwargs()
        return cls(units, activation=activation, use_bias=False, name=name, **kwargs)

    def conv(
        self,
        filters: int,
        kernel_size: int,
        name: str,
        strides: int = 1,
        activation: str | None = None,
        hidden: bool = True,
    ) -> keras.layers.Layer:
        cls = keras.layers.Conv2D if self.mask is None else MaskedConv2D
        return cls(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            activation=activation,
            use_bias=False,
            name=name,
            **(self._hidden_kwargs() if hidden else self._kwargs()),
        )


def _head(x: Any, make: _Layers, num_classes: int, hidden: Sequence[int]) -> Any:
    for i, units in enumerate(hidden, start=1):
        x = make.dense(units, "elu", name=f"dense{i}")(x)
    return make.dense(num_classes, "softmax", name="output", hidden=False)(x)


def is_convolutional(name: str) -> bool:
    """Whether zoo model ``name`` has convolutions (every model but the FCN): what
    :mod:`keras_ssm.training.precision` picks the fastest training path by."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; allowed: {', '.join(MODELS)}.")
    return name != "fcn"


# ----------------------------------------------------------------------------- FCN and Conv
def fcn(
    *,
    mask: MaskArg = "signed",
    num_classes: int = 10,
    input_shape: Shape = MNIST_SHAPE,
    threshold: float | None = None,
    weight_initializer: Any = None,
    score_initializer: Any = "glorot_uniform",
    unit_penalty: float = 0.0,
) -> keras.Model:
    """The MNIST fully connected net 784-300-100-10 (266,200 weights).

    Args:
        mask: ``None`` for the dense baseline, else the mask of every layer (``"signed"``,
            ``"binary"``, ``"topk"``, a config dict or a :class:`keras_ssm.masks.Mask`).
        num_classes: output units.
        input_shape: the input is flattened, so any shape works; (28, 28, 1) is MNIST's.
        threshold: the signed mask's threshold fraction (``None``: the mask's default 0.4).
        weight_initializer: frozen weights of a masked model (default ``"elus"``) or the kernels
            of the dense baseline (default ``"elu_uniform"``).
        score_initializer: the scores of a masked model.
        unit_penalty: strength of the group penalty on the hidden layers' scores that empties
            whole units (see :mod:`keras_ssm.structure`); 0 (default): none.

    >>> fcn(mask=None).count_params()
    266200
    """
    make = _Layers(mask, threshold, weight_initializer, score_initializer, unit_penalty)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = _head(x, make, num_classes, (300, 100))
    return keras.Model(inputs, outputs, name="fcn")


def _conv_net(
    name: str,
    stages: Sequence[int],
    mask: MaskArg,
    num_classes: int,
    input_shape: Shape,
    threshold: float | None,
    weight_initializer: Any,
    score_initializer: Any,
    unit_penalty: float = 0.0,
) -> keras.Model:
    """VGG-like: per stage two 3x3 convs and a 2x2 max-pool; then FC 256, 256, classes."""
    make = _Layers(mask, threshold, weight_initializer, score_initializer, unit_penalty)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for s, filters in enumerate(stages, start=1):
        for c in (1, 2):
            x = make.conv(filters, 3, activation="elu", name=f"conv{2 * s - 2 + c}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{s}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = _head(x, make, num_classes, (256, 256))
    return keras.Model(inputs, outputs, name=name)


def _conv_factory(name: str, stages: Sequence[int], count: int) -> Callable[..., keras.Model]:
    def build(
        *,
        mask: MaskArg = "signed",
        num_classes: int = 10,
        input_shape: Shape = CIFAR_SHAPE,
        threshold: float | None = None,
        weight_initializer: Any = None,
        score_initializer: Any = "glorot_uniform",
        unit_penalty: float = 0.0,
    ) -> keras.Model:
        return _conv_net(
            name,
            stages,
            mask,
            num_classes,
            input_shape,
            threshold,
            weight_initializer,
            score_initializer,
            unit_penalty,
        )

    layout = ", pool, ".join(f"conv {f},{f}" for f in stages)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"""{name.capitalize()} ({count:,} weights): {layout}, pool, FC 256, 256.

    Arguments as for :func:`fcn`; ``input_shape`` defaults to CIFAR's (32, 32, 3).

    >>> {name}(mask=None).count_params()
    {count}
    """
    return build


conv2 = _conv_factory("conv2", (64,), 4_300_992)
conv4 = _conv_factory("conv4", (64, 128), 2_425_024)
conv6 = _conv_factory("conv6", (64, 128, 256), 2_261_184)
conv8 = _conv_factory("conv8", (64, 128, 256, 512), 5_275_840)


# ----------------------------------------------------------------------------- ResNets
class _Norm:
    """The ResNets' BatchNorm layers for one ``batchnorm`` choice (see :data:`BATCHNORM`)."""

    def __init__(self, batchnorm: str, trainable_stem: bool = False) -> None:
        if batchnorm not in BATCHNORM:
            raise ValueError(
                f"Unknown batchnorm={batchnorm!r}; allowed: {', '.join(map(repr, BATCHNORM))}."
            )
        self.batchnorm = batchnorm
        self.trainable_stem = trainable_stem

    def __call__(self, name: str, stem: bool = False) -> keras.layers.Layer:
        batchnorm = self.batchnorm
        if stem and self.trainable_stem and batchnorm == "frozen":
            batchnorm = "train"  # the reference's frozen ResNet20 trains its stem BatchNorm
        if batchnorm == "frozen":  # inference mode with the initial statistics: x / sqrt(1 + eps)
            return keras.layers.BatchNormalization(
                center=False, scale=False, trainable=False, name=name
            )
        if batchnorm == "stats":  # batch statistics, moving statistics, no gamma/beta
            return keras.layers.BatchNormalization(center=False, scale=False, name=name)
        return keras.layers.BatchNormalization(name=name)


def _elu(name: str) -> keras.layers.Layer:
    return keras.layers.Activation("elu", name=name)


def _projection_block(
    x: Any, filters: int, strides: int, make: _Layers, norm: _Norm, name: str
) -> Any:
    """First block of a stage: 1x1 conv (strided), 3x3 conv; a 1x1 conv + BN shortcut.

    As in the reference, the residual branch ends in BN + ELU before the addition.
    """
    y = make.conv(filters, 1, strides=strides, name=f"{name}_conv1")(x)
    y = _elu(f"{name}_elu1")(norm(f"{name}_bn1")(y))
    y = make.conv(filters, 3, name=f"{name}_conv2", hidden=False)(y)
    y = _elu(f"{name}_elu2")(norm(f"{name}_bn2")(y))
    shortcut = make.conv(filters, 1, strides=strides, name=f"{name}_shortcut", hidden=False)(x)
    shortcut = norm(f"{name}_shortcut_bn")(shortcut)
    return _elu(f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _identity_block(x: Any, filters: int, make: _Layers, norm: _Norm, name: str) -> Any:
    """3x3 conv, BN, ELU, 3x3 conv, BN; identity shortcut; ELU after the addition."""
    y = make.conv(filters, 3, name=f"{name}_conv1")(x)
    y = _elu(f"{name}_elu1")(norm(f"{name}_bn1")(y))
    y = make.conv(filters, 3, name=f"{name}_conv2", hidden=False)(y)
    y = norm(f"{name}_bn2")(y)
    return _elu(f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, x]))


def _resnet(
    name: str,
    blocks: int,
    width: int,
    *,
    mask: MaskArg,
    num_classes: int,
    input_shape: Shape,
    batchnorm: str,
    trainable_stem_bn: bool,
    threshold: float | None,
    weight_initializer: Any,
    score_initializer: Any,
    unit_penalty: float = 0.0,
) -> keras.Model:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"`width` must be a positive int; received width={width!r}.")
    make = _Layers(mask, threshold, weight_initializer, score_initializer, unit_penalty)
    norm = _Norm(batchnorm, trainable_stem=trainable_stem_bn)
    inputs = keras.Input(input_shape, name="image")
    # the unit penalty goes on each block's first convolution only: the others feed an Add
    # (their filters are tied to the shortcut's), which shrink cannot narrow
    x = make.conv(16 * width, 3, name="stem_conv", hidden=False)(inputs)
    x = _elu("stem_elu")(norm("stem_bn", stem=True)(x))
    x = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="stem_pool")(x)
    for stage, (filters, strides) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        filters *= width
        x = _projection_block(x, filters, strides, make, norm, f"stage{stage}_block1")
        for b in range(2, blocks + 1):
            x = _identity_block(x, filters, make, norm, f"stage{stage}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = make.dense(num_classes, "softmax", name="output", hidden=False)(x)
    return keras.Model(inputs, outputs, name=name)


_RESNET_DOC = """

    Stem: 3x3 conv (16 x width), BN, ELU, 3x3 max-pool with stride 1.  Three stages of
    {blocks} blocks with 16/32/64 x width filters; the first block of a stage is a 1x1 conv
    (stride 1/2/2), BN, ELU, 3x3 conv, BN, ELU, plus a 1x1 conv + BN shortcut; the others are
    3x3 conv, BN, ELU, 3x3 conv, BN with an identity shortcut; ELU after every addition.
    Global average pooling and a softmax dense head.

    Args:
        mask, num_classes, input_shape, threshold, weight_initializer, score_initializer:
            as for :func:`fcn`.
        unit_penalty: as for :func:`fcn`, on the first convolution of each block only (the
            filters shrink can remove; every other convolution feeds a residual addition).
        batchnorm: ``"train"`` (default): every BatchNorm learns gamma/beta and uses batch
            statistics in training (and updates its moving statistics), also in a masked model.
            ``"stats"``: BatchNorm layers without gamma/beta that use batch statistics in
            training and update their moving statistics (edge-popup's non-affine BatchNorm):
            a masked model then trains its scores only.  ``"frozen"``: the reference's
            variant: BatchNorm layers without gamma/beta, ``trainable=False`` (so always in
            inference mode with the initial statistics, i.e. ``x / sqrt(1 + 1e-3)``){stem}.
            (``keras_ssm.supermask``'s ``batchnorm`` takes the same names.)
"""


def resnet20(
    width: int = 1,
    *,
    mask: MaskArg = "signed",
    num_classes: int = 10,
    input_shape: Shape = CIFAR_SHAPE,
    batchnorm: str = "train",
    threshold: float | None = None,
    weight_initializer: Any = None,
    score_initializer: Any = "glorot_uniform",
    unit_penalty: float = 0.0,
) -> keras.Model:
    name = "resnet20" if width == 1 else f"resnet20x{width}"
    return _resnet(
        name,
        3,
        width,
        mask=mask,
        num_classes=num_classes,
        input_shape=input_shape,
        batchnorm=batchnorm,
        trainable_stem_bn=True,
        threshold=threshold,
        weight_initializer=weight_initializer,
        score_initializer=score_initializer,
        unit_penalty=unit_penalty,
    )


resnet20.__doc__ = (
    "ResNet20 for CIFAR-10; 248,624 / 992,352 / 2,231,184 weights at width 1 / 2 / 3."
    + _RESNET_DOC.format(blocks=3, stem="; as in the reference the stem BatchNorm stays trainable")
    + """
    >>> from keras_ssm.models import kernel_count
    >>> kernel_count(resnet20(width=2, mask="signed", threshold=0.75, batchnorm="frozen"))
    992352
    """
)


def _deep_resnet(name: str, blocks: int, count: int) -> Callable[..., keras.Model]:
    def build(
        *,
        mask: MaskArg = "signed",
        num_classes: int = 100,
        input_shape: Shape = CIFAR_SHAPE,
        batchnorm: str = "train",
        threshold: float | None = None,
        weight_initializer: Any = None,
        score_initializer: Any = "glorot_uniform",
        unit_penalty: float = 0.0,
    ) -> keras.Model:
        return _resnet(
            name,
            blocks,
            1,
            mask=mask,
            num_classes=num_classes,
            input_shape=input_shape,
            batchnorm=batchnorm,
            trainable_stem_bn=False,
            threshold=threshold,
            weight_initializer=weight_initializer,
            score_initializer=score_initializer,
            unit_penalty=unit_penalty,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{name[:6].capitalize()}{name[6:]} for CIFAR-100 ({count:,} weights with 100 classes)."
        + _RESNET_DOC.format(blocks=blocks, stem="")
        + f"""
    >>> from keras_ssm.models import kernel_count
    >>> kernel_count({name}(mask=None))
    {count}
    """
    )
    return build


resnet56 = _deep_resnet("resnet56", 9, 834_992)
resnet110 = _deep_resnet("resnet110", 18, 1_705_904)


# ----------------------------------------------------------------------------- lookup
_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "fcn": fcn,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "conv8": conv8,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet110": resnet110,
}
_WIDTH_ALIASES = {"resnet20x2": 2, "resnet20x3": 3}


def _check_name(name: str) -> str:
    key = name.lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; allowed: {', '.join(MODELS)}.")
    return key


def get(name: str, **kwargs: Any) -> keras.Model:
    """Build model ``name`` (one of :data:`MODELS`, case-insensitive) with ``kwargs``.

    ``"resnet20x2"`` and ``"resnet20x3"`` are ``resnet20(width=2)`` and ``resnet20(width=3)``.

    >>> get("conv4", mask="signed", threshold=0.4).name
    'conv4'
    >>> get("vgg16")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'vgg16'; allowed: fcn, conv2, conv4, conv6, conv8, resnet20, \
resnet20x2, resnet20x3, resnet56, resnet110.
    """
    key = _check_name(name)
    if key in _WIDTH_ALIASES:
        if kwargs.get("width", _WIDTH_ALIASES[key]) != _WIDTH_ALIASES[key]:
            raise ValueError(f"Model {name!r} has width {_WIDTH_ALIASES[key]}; got {kwargs}.")
        kwargs["width"] = _WIDTH_ALIASES[key]
        key = "resnet20"
    return _BUILDERS[key](**kwargs)
