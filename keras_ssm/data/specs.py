"""The dataset table: static facts about each dataset keras_ssm can load, and name lookup."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

__all__ = [
    "DATASETS",
    "IDX_FILES",
    "MAX_EXAMPLES",
    "SPECS",
    "SPLITS",
    "Array",
    "Arrays",
    "PathLike",
    "Spec",
    "Split",
    "check_split",
    "spec_for",
]

Array = np.ndarray
Split = tuple[Array, Array]
Arrays = tuple[Split, Split]
PathLike = str | os.PathLike[str]

SPLITS = ("train", "test")
MAX_EXAMPLES = 10_000_000  # sanity bound on declared example counts

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four MNIST-style idx files, in (train x, train y, test x, test y) order."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static facts about one dataset."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    folders: tuple[str, ...]  # subfolder names under a data dir, preferred first
    family: str  # "idx" or "cifar"
    tfds_name: str
    tar_name: str = ""  # official python tarball (CIFAR only)
    py_folder: str = ""  # folder inside the tarball
    py_train: tuple[str, ...] = ()  # pickled training batches
    py_test: str = ""  # pickled test batch
    label_key: str = "labels"


SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("mnist", (28, 28, 1), 10, 60_000, 10_000, ("mnist",), "idx", "mnist"),
        Spec(
            "fashion_mnist",
            (28, 28, 1),
            10,
            60_000,
            10_000,
            ("fashion-mnist", "fashion_mnist"),
            "idx",
            "fashion_mnist",
        ),
        Spec(
            "cifar10",
            (32, 32, 3),
            10,
            50_000,
            10_000,
            ("cifar10", "cifar-10"),
            "cifar",
            "cifar10",
            tar_name="cifar-10-python.tar.gz",
            py_folder="cifar-10-batches-py",
            py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            py_test="test_batch",
        ),
        Spec(
            "cifar100",
            (32, 32, 3),
            100,
            50_000,
            10_000,
            ("cifar100", "cifar-100"),
            "cifar",
            "cifar100",
            tar_name="cifar-100-python.tar.gz",
            py_folder="cifar-100-python",
            py_train=("train",),
            py_test="test",
            label_key="fine_labels",
        ),
    )
}

DATASETS: tuple[str, ...] = tuple(SPECS)
"""Names accepted by :func:`~keras_ssm.data.load`, :func:`~keras_ssm.data.load_arrays` and
:func:`~keras_ssm.data.info`."""


def spec_for(name: str) -> Spec:
    """The spec of a dataset; accepts case and ``-`` variants; else a ``ValueError`` listing
    :data:`DATASETS`.

    Example:
        >>> spec_for("Fashion-MNIST").name
        'fashion_mnist'
        >>> spec_for("CIFAR100").num_classes
        100
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in SPECS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}.")
    return SPECS[key]


def check_split(split: str) -> str:
    """``split`` itself when it is one of :data:`SPLITS`, else a ``ValueError`` naming it."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    return split
