"""The two errors of :mod:`keras_ssm.data`, and the guard that turns read failures into one.

Both errors are re-exported by :mod:`keras_ssm.data` and report that as their module, so
tracebacks and ``except keras_ssm.data.DataFormatError`` read as they always have.
"""

from __future__ import annotations

import contextlib
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator

__all__ = ["DataFormatError", "DataNotFoundError", "reading"]


class DataNotFoundError(FileNotFoundError):
    """No source holds the requested dataset; the message lists every place looked at.

    Attributes:
        name: the dataset name.
        searched: one human-readable line per place that was tried.
    """

    def __init__(self, name: str, searched: list[str], hint: str) -> None:
        lines = [f"No data found for dataset {name!r}. Looked in:"]
        lines += [f"  - {line}" for line in searched]
        lines.append(hint)
        super().__init__("\n".join(lines))
        self.name = name
        self.searched = list(searched)


DataNotFoundError.__module__ = "keras_ssm.data"


class DataFormatError(ValueError):
    """A data file exists but is corrupt, truncated or inconsistent (message names the file)."""


DataFormatError.__module__ = "keras_ssm.data"


# What a damaged file can make the standard-library readers raise.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,  # e.g. a declared size beyond what the platform can address
    NotImplementedError,  # zipfile: an unsupported compression method or flag
    RuntimeError,  # zipfile: an encrypted member
    struct.error,
    lzma.LZMAError,
    zlib.error,
    zipfile.BadZipFile,
    tarfile.TarError,
    pickle.UnpicklingError,
)


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn low-level read errors into a :class:`DataFormatError` naming ``path``.

    Example:
        >>> try:
        ...     with reading("x.bin"):
        ...         raise EOFError("short read")
        ... except DataFormatError as exc:
        ...     print(exc)
        x.bin: unreadable or corrupt file (EOFError: short read)
    """
    try:
        yield
    except DataFormatError:
        raise
    except _READ_ERRORS as exc:
        raise DataFormatError(
            f"{path}: unreadable or corrupt file ({type(exc).__name__}: {exc})"
        ) from exc
