"""Cut the input pixels a folded model never reads, with a crop rather than a gather.

A trained signed-supermask FCN reads only the pixels where digits have ink: the first Dense
layer's rows for the border pixels are all zero.  :func:`crop_inputs` finds the smallest box
of the image that holds every pixel the first Dense layer reads and puts a ``Cropping2D``
before the ``Flatten``, keeping only the box's rows of the kernel.  A crop exports as one
``Slice`` (ONNX) / ``StridedSlice`` (LiteRT), which costs far less than the ``Gather`` of
scattered pixels it replaces (measured on the FCN: the gather cost more than the MatMul rows it
saved); unread pixels inside the box stay as zero rows.

The model computes the same function (up to float32 summation order in the first MatMul).

>>> import keras, numpy as np
>>> inputs = keras.Input((6, 6, 1))
>>> dense = keras.layers.Dense(3)
>>> model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
>>> k = np.zeros((36, 3), "float32"); k[7] = 1.0; k[22] = -1.0   # pixels (1, 1) and (3, 4)
>>> dense.set_weights([k, np.zeros(3, "float32")])
>>> cropped, report = crop_inputs(model)
>>> report.box, report.features_before, report.features_after
(((1, 2), (1, 1)), 36, 12)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ["CropReport", "crop_inputs"]


@dataclass(frozen=True)
class CropReport:
    """What :func:`crop_inputs` did.

    Attributes:
        box: ``((top, bottom), (left, right))`` rows and columns cut (``Cropping2D``'s
            argument); ``None`` when the model was left as it was.
        features_before / features_after: the first Dense layer's input size.
        features_read: how many of the inputs the first Dense layer reads at all.
    """

    box: tuple[tuple[int, int], tuple[int, int]] | None
    features_before: int
    features_after: int
    features_read: int

    def __str__(self) -> str:
        if self.box is None:
            return f"inputs: nothing to crop ({self.features_read}/{self.features_before} read)"
        return (
            f"inputs: cropped {self.box} -> {self.features_after} of {self.features_before} "
            f"features ({self.features_read} read)"
        )


def _first_flatten_dense(model: keras.Model) -> tuple[Any, Any] | None:
    """``(flatten, dense)`` when the model's only input feeds a channels-last ``Flatten`` whose
    only reader is a ``Dense`` (the FCN pattern), else ``None``."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        return None
    readers = _readers(model)
    first = readers.get(id(model.inputs[0]), [])
    if len(first) != 1 or type(first[0]) is not keras.layers.Flatten:
        return None
    flatten = first[0]
    if flatten.data_format != "channels_last" or len(flatten._inbound_nodes) != 1:
        return None
    second = readers.get(id(flatten.output), [])
    if len(second) != 1 or type(second[0]) is not keras.layers.Dense:
        return None
    if len(second[0]._inbound_nodes) != 1 or any(flatten.output is o for o in model.outputs):
        return None
    return flatten, second[0]


def _readers(model: keras.Model) -> dict[int, list[Any]]:
    """Tensor id -> the layers of ``model`` that read it."""
    found: dict[int, list[Any]] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                found.setdefault(id(tensor), []).append(layer)
    return found


def crop_inputs(model: keras.Model) -> tuple[keras.Model, CropReport]:
    """Crop the image border the first Dense layer never reads; return ``(model, report)``.

    Applies to a single image input read through ``Flatten`` by a ``Dense`` layer (stock
    layers, e.g. :func:`keras_ssm.fold`'s result); any other model comes back unchanged with a
    report saying so.  The input shape of the model does not change.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    found = _first_flatten_dense(model) if model.built else None
    if found is None:
        n = 0
        return model, CropReport(None, n, n, n)
    flatten, dense = found
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    kernel, *rest = dense.get_weights()
    used = np.any(kernel != 0, axis=1)
    pixels = used.reshape(height, width, channels).any(axis=2)
    read = int(used.sum())
    if not pixels.any():  # the layer reads nothing: keep one pixel so shapes stay valid
        pixels[0, 0] = True
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    box = ((int(rows[0]), height - 1 - int(rows[-1])), (int(cols[0]), width - 1 - int(cols[-1])))
    if box == ((0, 0), (0, 0)):
        return model, CropReport(None, kernel.shape[0], kernel.shape[0], read)
    keep = np.zeros((height, width, channels), bool)
    keep[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1, :] = True
    new_kernel = kernel[keep.reshape(-1)]

    clones: dict[str, keras.layers.Layer] = {}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        clones[layer.name] = type(layer).from_config(layer.get_config())
        return clones[layer.name]

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer is clones.get(flatten.name):
            crop = keras.layers.Cropping2D(box, name=f"{flatten.name}_crop")
            return layer(crop(args[0]), *args[1:], **kwargs)
        return layer(*args, **kwargs)

    new = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if layer.name in clones and layer is not dense:
            clones[layer.name].set_weights(layer.get_weights())
    clones[dense.name].set_weights([new_kernel, *rest])
    return new, CropReport(box, kernel.shape[0], new_kernel.shape[0], read)
