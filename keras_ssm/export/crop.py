"""Cut the input pixels a folded model never reads, with a crop rather than a gather.

A trained signed-supermask FCN reads only the pixels where digits have ink: the first Dense
layer's rows for the border pixels are all zero.  :func:`crop_inputs` finds the smallest box
of the image that holds every pixel the first Dense layer reads and puts a ``Cropping2D``
before the ``Flatten``, keeping only the box's rows of the kernel.  A crop exports as one
``Slice`` (ONNX) / ``StridedSlice`` (LiteRT), which costs far less than the ``Gather`` of
scattered pixels it replaces (measured on the FCN: the gather cost more than the MatMul rows it
saved); unread pixels inside the box stay as zero rows.

Whether a crop also saves time depends on the box and on the runtime's threads.  Measured under
onnxruntime on 2 cores (``python export/graph_timing.py``: Flatten -> Dense(63, elu) ->
Dense(10) on 28x28 images; us at batch 1 / 64 / 256, crop vs no crop):

==================  ==================================  ==================================
box keeps           default session (2 threads)         1 thread
==================  ==================================  ==================================
73% of the pixels   8.8 / 70 / 240 vs 8.5 / 46 / 144    9.0 / 69 / 251 vs 8.7 / 73 / 272
51%                 8.5 / 54 / 179 vs 8.7 / 46 / 145    8.5 / 53 / 193 vs 8.9 / 73 / 271
25%                 8.0 / 35 / 110 vs 8.8 / 46 / 144    8.0 / 35 / 123 vs 8.6 / 73 / 271
8%                  7.6 / 26 / 66 vs 8.6 / 46 / 146     7.7 / 24 / 75 vs 8.8 / 74 / 271
==================  ==================================  ==================================

On one thread the crop always pays; with two, the uncropped first layer spreads over both cores
and a crop pays only once the box holds well under half of the image.  On an Intel Xeon (2 cores,
trained FCN of ``examples/paper/results/fcn_signed_default_s7531``: box 70%, 124 units; us at
batch 1 / 64) the two settings disagree the same way: default session 12.8 / 104 cropped vs
13.0 / 94 not, one thread 12.1 / 103 vs 12.0 / 113.  A crop always makes the
files smaller (the first kernel loses its border rows), so :func:`crop_inputs` crops any unread
border by default; ``max_kept`` (e.g. 0.4) keeps the zero rows instead when the box holds more
than that fraction of the features.

The model computes the same function (up to float32 summation order in the first MatMul).  A
model that already starts with a ``Cropping2D`` before the ``Flatten`` (a compact ``.ssm`` saved
after an export) is measured over the whole image again: its crop is kept, tightened, or taken
out (zero rows back in the kernel) as ``max_kept`` says.

>>> import keras, numpy as np
>>> inputs = keras.Input((6, 6, 1))
>>> dense = keras.layers.Dense(3)
>>> model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
>>> k = np.zeros((36, 3), "float32"); k[7] = 1.0; k[22] = -1.0   # pixels (1, 1) and (3, 4)
>>> dense.set_weights([k, np.zeros(3, "float32")])
>>> cropped, report = crop_inputs(model)
>>> report.box, report.features_before, report.features_after
(((1, 2), (1, 1)), 36, 12)
>>> crop_inputs(model, max_kept=0.3)[1].box is None   # the box keeps 12 of 36 (33%)
True
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
        box_features: how many features the smallest box around the read pixels holds
            (``features_after`` when cropped; 0 when there is no Flatten -> Dense to crop).
    """

    box: tuple[tuple[int, int], tuple[int, int]] | None
    features_before: int
    features_after: int
    features_read: int
    box_features: int = 0

    def __str__(self) -> str:
        if self.box is None and self.box_features < self.features_before:
            return (
                f"inputs: not cropped: the box of read pixels keeps {self.box_features} of "
                f"{self.features_before} features, more than max_kept allows "
                f"({self.features_read} read)"
            )
        if self.box is None and self.features_before == 0:
            return "inputs: not cropped (the input does not feed a Flatten -> Dense)"
        if self.box is None:
            return f"inputs: nothing to crop ({self.features_read}/{self.features_before} read)"
        return (
            f"inputs: cropped {self.box} -> {self.features_after} of {self.features_before} "
            f"features ({self.features_read} read)"
        )


def _first_flatten_dense(model: keras.Model) -> tuple[Any, Any, Any] | None:
    """``(crop, flatten, dense)`` when the model's only input feeds a channels-last ``Flatten``
    (directly, or through a ``Cropping2D``: ``crop``, else ``None``) whose only reader is a
    ``Dense`` (the FCN pattern), else ``None``."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        return None
    readers = _readers(model)
    first = readers.get(id(model.inputs[0]), [])
    crop = None
    if len(first) == 1 and type(first[0]) is keras.layers.Cropping2D:
        crop = first[0]
        if crop.data_format != "channels_last" or len(crop._inbound_nodes) != 1:
            return None
        if any(crop.output is o for o in model.outputs):
            return None
        first = readers.get(id(crop.output), [])
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
    return crop, flatten, second[0]


def _readers(model: keras.Model) -> dict[int, list[Any]]:
    """Tensor id -> the layers of ``model`` that read it."""
    found: dict[int, list[Any]] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                found.setdefault(id(tensor), []).append(layer)
    return found


def crop_inputs(model: keras.Model, max_kept: float = 1.0) -> tuple[keras.Model, CropReport]:
    """Crop the image border the first Dense layer never reads; return ``(model, report)``.

    Applies to a single image input read through ``Flatten`` (directly or through an earlier
    ``Cropping2D``, which this replaces) by a ``Dense`` layer (stock layers, e.g.
    :func:`keras_ssm.fold`'s result); any other model comes back unchanged with a report saying
    so.  The input shape of the model does not change.

    Args:
        model: a built Keras model.
        max_kept: crop only when the box around the read pixels holds at most this fraction
            of the features (0 < max_kept <= 1; the default 1 crops whenever a border is
            unread; 0.4 crops only where it is faster in every setting measured, see the
            module docstring).
    """
    if not (isinstance(max_kept, (int, float)) and 0 < max_kept <= 1):
        raise ValueError(f"max_kept must be a fraction in (0, 1]; got {max_kept!r}")
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    found = _first_flatten_dense(model) if model.built else None
    if found is None:
        n = 0
        return model, CropReport(None, n, n, n)
    old_crop, flatten, dense = found
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    kernel, *rest = dense.get_weights()
    features = height * width * channels
    # the kernel over the whole image: zero rows for the pixels an earlier crop cut
    was_kept = np.zeros((height, width, channels), bool)
    ((t0, b0), (l0, r0)) = old_crop.cropping if old_crop is not None else ((0, 0), (0, 0))
    was_kept[t0 : height - b0, l0 : width - r0, :] = True
    full = np.zeros((features, kernel.shape[1]), kernel.dtype)
    full[was_kept.reshape(-1)] = kernel
    used = np.any(full != 0, axis=1)
    pixels = used.reshape(height, width, channels).any(axis=2)
    read = int(used.sum())
    if not pixels.any():  # the layer reads nothing: keep one pixel so shapes stay valid
        pixels[0, 0] = True
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    box = ((int(rows[0]), height - 1 - int(rows[-1])), (int(cols[0]), width - 1 - int(cols[-1])))
    keep = np.zeros((height, width, channels), bool)
    keep[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1, :] = True
    kept = int(keep.sum())
    if box == ((0, 0), (0, 0)) or kept > max_kept * features:
        box, keep = None, np.ones_like(keep)  # no crop (an earlier one is taken out)
    if old_crop is not None and box == tuple(map(tuple, old_crop.cropping)):
        return model, CropReport(box, features, kernel.shape[0], read, kept)  # as cropped
    if old_crop is None and box is None:
        return model, CropReport(None, features, features, read, kept)
    new_kernel = full[keep.reshape(-1)]

    clones: dict[str, keras.layers.Layer] = {}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        clones[layer.name] = type(layer).from_config(layer.get_config())
        return clones[layer.name]

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if old_crop is not None and layer is clones.get(old_crop.name):
            return args[0]  # the earlier crop is replaced by the one before the Flatten
        if layer is clones.get(flatten.name) and box is not None:
            crop = keras.layers.Cropping2D(box, name=f"{flatten.name}_crop")
            return layer(crop(args[0]), *args[1:], **kwargs)
        return layer(*args, **kwargs)

    new = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if layer.name in clones and layer is not dense and layer is not old_crop:
            clones[layer.name].set_weights(layer.get_weights())
    clones[dense.name].set_weights([new_kernel, *rest])
    if box is None:
        return new, CropReport(None, features, features, read, kept)
    return new, CropReport(box, features, new_kernel.shape[0], read, kept)
