"""A restricted unpickler for the CIFAR python batches: it builds data, never runs code.

The official CIFAR-10/100 "python version" files are pickles of a dict such as
``{b"data": <uint8 ndarray (N, 3072)>, b"labels": [int, ...], ...}``. A pickle is a small
program whose GLOBAL/STACK_GLOBAL/INST opcodes import any callable by name and whose REDUCE,
NEWOBJ and BUILD opcodes call it, so :func:`pickle.load` on an untrusted file runs arbitrary
code. :func:`load_restricted` reads such files without that risk.

What is allowed, exactly:

* Opcodes that build plain values: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``str``, ``bytes``, ``bytearray``, ``int``, ``float``, ``bool``, ``None``, and memo
  references to them. None of these involves a global or runs code.
* Globals: only the seven ``(module, name)`` pairs of :data:`ALLOWED_GLOBALS`, and each one
  resolves to an inert stand-in defined in this module, never to the real object:

  - ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``: how numpy pickles an array with protocols 0-4
    (``_reconstruct(ndarray, ...)`` then BUILD with ``(version, shape, dtype, is_fortran,
    raw bytes)``); the stand-ins only *record* the arguments and the BUILD state.
  - ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: the same for
    protocol 5 (``_frombuffer(buffer, dtype, shape, order)``); the stand-in records them.
  - ``_codecs.encode``: how Python 3 writes ``bytes`` with protocol 2
    (``_codecs.encode(str, "latin1")``); the stand-in accepts a ``str`` and the latin-1
    codec only and returns ``str.encode("latin1")``.

  Every other global, including extension-registry codes (EXT1/2/4, resolved through
  ``find_class`` too), raises ``pickle.UnpicklingError("refusing to load global ...")``.
  Persistent ids (no ``persistent_load``) and out-of-band buffers (no ``buffers``) are
  refused by :class:`pickle.Unpickler` itself.

So REDUCE/NEWOBJ/BUILD can only ever reach a stand-in: no callable named by the file is
imported or called. The recorded array is then turned into a real one by
:func:`uint8_array`, which checks dtype (``uint8`` only), shape and payload length first.

Memory: before unpickling, :func:`check_opcodes` walks the opcode stream with
:func:`pickletools.genops`, which checks every declared length against the bytes that remain,
and rejects memo indices larger than the opcode count; the C unpickler would otherwise
allocate what a few edited bytes declare (gigabytes) before reading anything.

Every failure is a :class:`~keras_ssm.data.DataFormatError` naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any

import numpy as np

from keras_ssm.data.errors import DataFormatError

__all__ = [
    "ALLOWED_GLOBALS",
    "ArrayStub",
    "SafeUnpickler",
    "check_opcodes",
    "load_restricted",
    "text",
    "uint8_array",
]


def text(value: object) -> object:
    """``value`` decoded from latin-1 when it is ``bytes`` (Python 2 pickles), else as is."""
    return value.decode("latin1") if isinstance(value, bytes) else value


class ArrayStub:
    """Inert stand-in for a pickled numpy array; only records the pickled state."""

    def __init__(self, *args: object) -> None:
        self.args = args
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class DtypeStub(ArrayStub):
    """Inert stand-in for a pickled numpy dtype (``args[0]`` is its descr, e.g. ``"u1"``)."""


def _reconstruct_stub(*args: object) -> ArrayStub:
    return ArrayStub(*args)


def _frombuffer_stub(buffer: object, dtype: object, shape: object, order: object) -> ArrayStub:
    stub = ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _codecs_encode_stub(value: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(value, str) or text(encoding) not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return value.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stub,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stub,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer_stub,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer_stub,
    ("numpy", "ndarray"): ArrayStub,
    ("numpy", "dtype"): DtypeStub,
    ("_codecs", "encode"): _codecs_encode_stub,
}
"""The only globals a pickle may name, each mapped to its inert stand-in."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only to the inert stand-ins of :data:`ALLOWED_GLOBALS`.

    Plain containers (dict, list, tuple, str, bytes, int, ...) are built by pickle opcodes
    without any global; everything else is refused, so no code from the file can run.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def check_opcodes(blob: bytes, where: str) -> None:
    """Walk the pickle's opcodes without building anything, before unpickling it.

    The C unpickler allocates what a length field or memo index declares before it reads: a
    few edited bytes could ask for gigabytes. ``pickletools.genops`` checks every declared
    length against the bytes that remain; memo indices must not exceed the opcode count.
    """
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(blob)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
                raise DataFormatError(f"{where}: corrupt pickle (memo index {arg} at op {count})")
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(f"{where}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def load_restricted(blob: bytes, where: str) -> object:
    """Unpickle ``blob`` with :class:`SafeUnpickler` after :func:`check_opcodes`.

    Arrays come back as :class:`ArrayStub` records (see :func:`uint8_array`); byte strings
    stay ``bytes`` (``encoding="bytes"``, as Python 2 wrote them).

    Example:
        >>> import pickle
        >>> load_restricted(pickle.dumps({b"labels": [1, 2]}, protocol=2), "batch")
        {b'labels': [1, 2]}
        >>> try:
        ...     load_restricted(pickle.dumps(print), "batch")
        ... except DataFormatError as exc:
        ...     print(exc)
        batch: corrupt pickle (UnpicklingError: refusing to load global builtins.print)
    """
    check_opcodes(blob, where)
    try:
        return SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # the restricted unpickler runs no code: any failure is damage
        raise DataFormatError(f"{where}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def uint8_array(stub: object, where: str) -> np.ndarray:
    """Build a uint8 array from a recorded ndarray pickle state, checking sizes first."""
    state = getattr(stub, "state", None)
    if not isinstance(stub, ArrayStub) or not isinstance(state, tuple) or len(state) != 5:
        raise DataFormatError(f"{where}: 'data' is not a pickled numpy array")
    _, shape, dtype, fortran, payload = state
    descr = text(dtype.args[0]) if isinstance(dtype, DtypeStub) and dtype.args else None
    if descr not in ("u1", "|u1", "uint8"):
        raise DataFormatError(f"{where}: 'data' has dtype {descr!r}, expected uint8")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataFormatError(f"{where}: 'data' has an invalid shape {shape!r}")
    if isinstance(payload, str):
        payload = payload.encode("latin1")
    if not isinstance(payload, bytes | bytearray) or len(payload) != math.prod(shape):
        raise DataFormatError(f"{where}: 'data' payload does not match its shape {shape}")
    order = "F" if fortran else "C"
    return np.frombuffer(bytes(payload), dtype=np.uint8).reshape(shape, order=order)
