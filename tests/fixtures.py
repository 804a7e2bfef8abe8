"""Small on-disk datasets for tests that run the CLI end to end."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def _idx(array: np.ndarray) -> bytes:
    kind = 0x08  # unsigned byte
    header = struct.pack(">BBBB", 0, 0, kind, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """Write an MNIST-format dataset (idx .gz files) of learnable random digits to
    ``folder/mnist`` and return ``folder`` (what ``KERAS_SSM_DATA_DIR`` should point at).

    Each class lights a different horizontal band of the 28x28 image, plus noise, so a model
    can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    target = folder / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7, 4:24] = 255
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            (target / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(_idx(array)))
    return folder
