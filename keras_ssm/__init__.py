"""keras_ssm: signed supermasks for Keras 3.

A network keeps its random initial weights frozen; training only decides, per weight, to keep
it (+1), hide it (0) or invert its sign (-1).

>>> import keras, keras_ssm
>>> model = keras.Sequential([
...     keras.Input((784,)),
...     keras_ssm.layers.MaskedDense(300, activation="elu", use_bias=False),
...     keras_ssm.layers.MaskedDense(10, activation="softmax", use_bias=False),
... ])
>>> 0 < keras_ssm.mask_stats(model)["remaining"] < 1
True
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# TensorFlow's C++ start-up chatter (INFO/WARNING) is off unless the user chose a level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_keras_quietly() -> None:
    """Import Keras (and so TensorFlow) without its C++ start-up lines (see
    :mod:`keras_ssm.startup`)."""
    from keras_ssm.startup import silenced_stderr, wants_quiet

    if "keras" not in sys.modules and wants_quiet():
        with silenced_stderr():
            import keras  # noqa: F401


_import_keras_quietly()

# layers_more registers the other maskable layer types (DepthwiseConv, SeparableConv,
# ConvTranspose, Embedding, ...) in keras_ssm.layers.MASKED_LAYERS and with Keras; structure
# registers UnitPenalty and schedules LinearWarmup, so .keras files trained with them load after
# `import keras_ssm`.
from keras_ssm import initializers, layers, layers_more, masks, schedules, structure  # noqa: E402
from keras_ssm.layers import MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedDense  # noqa: E402
from keras_ssm.norms import recalibrate_batchnorm  # noqa: E402
from keras_ssm.stats import MaskStatsCallback, mask_stats, summary  # noqa: E402
from keras_ssm.wrap import UnsupportedLayerError, fold, supermask  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MaskStatsCallback",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedConv3D",
    "MaskedDense",
    "UnsupportedLayerError",
    "fold",
    "initializers",
    "layers",
    "layers_more",
    "mask_stats",
    "masks",
    "recalibrate_batchnorm",
    "schedules",
    "structure",
    "summary",
    "supermask",
    "train",
]

# Heavier rooms load on first use: keras_ssm.data, .models, .recipes, .export, .analysis, ..., .cli
_LAZY = (
    "data",
    "models",
    "recipes",
    "export",
    "analysis",
    "report",
    "plots",
    "distributed",
    "training",
    "cli",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"keras_ssm.{name}")
    if name == "train":  # keras_ssm.train(...): the training function, loaded on first use
        return importlib.import_module("keras_ssm.training").train
    raise AttributeError(f"module 'keras_ssm' has no attribute {name!r}")
