"""Finding a dataset's files on disk: the ``data_dir`` argument, else ``KERAS_SSM_DATA_DIR``.

A root folder may hold one subfolder per dataset (``mnist/``, ``cifar-10/``, ...) or be the
dataset folder itself; see :mod:`keras_ssm.data` for the file layouts. Nothing here reads a
file's contents: :func:`find_local` only names the files, and every place it looked at (with
the reason it did not fit) is appended to ``searched`` for :class:`DataNotFoundError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

from keras_ssm.data.specs import IDX_FILES, PathLike, Spec

__all__ = ["DATA_DIR_ENV", "Source", "find_local", "how_to_supply"]

DATA_DIR_ENV = "KERAS_SSM_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class Source:
    """A local layout that was found: its kind and the files to read (resolved paths)."""

    layout: str  # "idx", "npz", "cifar-py" or "cifar-tar"
    files: tuple[str, ...]

    def split_files(self) -> tuple[str, str]:
        """The files holding the train and the test split, joined for error messages."""
        files = self.files
        if self.layout == "idx":
            train, test = files[:2], files[2:]
        elif len(files) == 1:
            train = test = files
        else:
            train, test = files[:-1], files[-1:]
        return " + ".join(train), " + ".join(test)


Finder = Callable[[Spec, Path], "Source | str"]


def find_local(spec: Spec, data_dir: PathLike | None, searched: list[str]) -> Source | None:
    """The first local layout found under ``data_dir`` (else the env var), or ``None``."""
    if data_dir is not None:
        root, label = Path(data_dir), "data_dir"
        searched.append(f"${DATA_DIR_ENV}: not consulted because data_dir was given")
    elif os.environ.get(DATA_DIR_ENV):
        root, label = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        searched.append(f"${DATA_DIR_ENV}: not set (and no data_dir given)")
        return None
    root = root.expanduser()
    for folder in _candidate_dirs(spec, root):
        if not folder.is_dir():
            reason = "is not a directory" if folder.exists() else "does not exist"
            searched.append(f"{label}: {folder}: {reason}")
            continue
        found = _find_in_folder(spec, folder)
        if isinstance(found, Source):
            return found
        searched.append(f"{label}: {folder}: {found}")
    return None


def how_to_supply(spec: Spec) -> str:
    """The closing hint of :class:`DataNotFoundError`: where to put which files."""
    if spec.family == "idx":
        files = ", ".join(b + ".gz" for b in IDX_FILES) + " (uncompressed idx files also work)"
    else:
        files = (
            f"train_part1..K.npz (x_train, y_train) + test.npz (x_test, y_test), or "
            f"{spec.tar_name}, or its extracted {spec.py_folder}/ folder"
        )
    return (
        f"To supply the data, put the files in <dir>/{spec.folders[0]}/ (or in <dir> itself) and "
        f"pass data_dir=<dir> (scripts: --data-dir <dir>) or set {DATA_DIR_ENV}=<dir>. "
        f"Expected files: {files}."
    )


def _candidate_dirs(spec: Spec, root: Path) -> list[Path]:
    """``root/<alias>`` for each folder alias of the dataset, then ``root`` itself."""
    return [root / folder for folder in spec.folders] + [root]


def _find_in_folder(spec: Spec, folder: Path) -> Source | str:
    """A layout found in ``folder``, else a short reason why none was found."""
    finders: tuple[Finder, ...] = (
        (_find_idx,) if spec.family == "idx" else (_find_npz, _find_cifar_py, _find_tar)
    )
    reasons = []
    for finder in finders:
        found = finder(spec, folder)
        if isinstance(found, Source):
            return found
        reasons.append(found)
    return "; ".join(reasons)


def _resolved(paths: list[Path]) -> tuple[str, ...]:
    return tuple(str(p.resolve()) for p in paths)


def _find_idx(spec: Spec, folder: Path) -> Source | str:
    del spec
    found: list[Path] = []
    missing: list[str] = []
    for base in IDX_FILES:
        alternatives = [base + ".gz", base, base.replace("-idx", ".idx")]
        match = next((folder / n for n in alternatives if (folder / n).is_file()), None)
        if match is None:
            missing.append(base + "[.gz]")
        else:
            found.append(match)
    if not missing:
        return Source("idx", _resolved(found))
    if found:
        return f"incomplete idx files, missing {', '.join(missing)}"
    return f"no idx files ({', '.join(b + '[.gz]' for b in IDX_FILES)})"


def _find_npz(spec: Spec, folder: Path) -> Source | str:
    del spec
    parts = {}
    for path in folder.glob("train_part*.npz"):
        match = re.fullmatch(r"train_part(\d+)\.npz", path.name)
        if match:
            parts[int(match.group(1))] = path
    train = [parts[i] for i in sorted(parts)]
    if not parts and (folder / "train.npz").is_file():
        train = [folder / "train.npz"]
    test = folder / "test.npz"
    if train and test.is_file():
        gaps = sorted(set(range(1, max(parts) + 1)) - set(parts)) if parts else []
        if gaps:
            return f"incomplete npz parts, missing train_part{gaps[0]}.npz"
        return Source("npz", _resolved([*train, test]))
    if train or test.is_file():
        return "incomplete npz layout, need train_part1..K.npz (or train.npz) and test.npz"
    return "no npz files (train_part1..K.npz + test.npz)"


def _find_cifar_py(spec: Spec, folder: Path) -> Source | str:
    names = [*spec.py_train, spec.py_test]
    for candidate in (folder / spec.py_folder, folder):
        paths = [candidate / n for n in names]
        if all(p.is_file() for p in paths):
            return Source("cifar-py", _resolved(paths))
    return f"no {spec.py_folder}/ folder"


def _find_tar(spec: Spec, folder: Path) -> Source | str:
    path = folder / spec.tar_name
    if path.is_file():
        return Source("cifar-tar", _resolved([path]))
    return f"no {spec.tar_name}"
