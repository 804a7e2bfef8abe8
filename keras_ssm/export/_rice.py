"""Vectorised Rice coding of the positions of nonzero entries (used by the compact format).

Positions are coded as the zero-run lengths ``g`` before each nonzero. Each run is split as
``g = (q << k) | r``; the ``q`` parts go to a *unary* stream (``q`` one-bits then a zero,
padded with ones to a byte) and the ``k``-bit remainders to a fixed-width stream (padded
with zeros). For i.i.d. masks at 3.8% density this is within 0.5% of the entropy.

Example:
    >>> import numpy as np
    >>> pos = np.array([3, 4, 40])
    >>> k, unary, rem = encode_positions(pos)
    >>> decode_positions(unary, rem, n=3, k=k, size=64).tolist()
    [3, 4, 40]
"""

from __future__ import annotations

import numpy as np

__all__ = ["RiceError", "encode_positions", "decode_positions", "MAX_K"]

MAX_K = 32


class RiceError(ValueError):
    """A Rice-coded position stream is inconsistent."""


def _gaps(pos: np.ndarray) -> np.ndarray:
    prev = np.concatenate([np.array([-1], dtype=np.int64), pos[:-1].astype(np.int64)])
    return pos.astype(np.int64) - prev - 1


def best_k(gaps: np.ndarray) -> int:
    """The Rice parameter minimising the coded size of ``gaps``."""
    if gaps.size == 0:
        return 0
    costs = [int(np.sum(gaps >> k)) + gaps.size * (k + 1) for k in range(MAX_K + 1)]
    return int(np.argmin(costs))


def encode_positions(pos: np.ndarray) -> tuple[int, bytes, bytes]:
    """Rice-code strictly increasing non-negative positions: ``(k, unary, remainders)``."""
    pos = np.asarray(pos, dtype=np.int64)
    gaps = _gaps(pos)
    if gaps.size and gaps.min() < 0:
        raise ValueError("positions must be strictly increasing and non-negative")
    k = best_k(gaps)
    q = gaps >> k
    ends = np.cumsum(q + 1) - 1  # index of each terminating zero bit
    nbits = int(ends[-1]) + 1 if ends.size else 0
    bits = np.ones(-(-nbits // 8) * 8, dtype=np.uint8)
    bits[ends] = 0
    unary = np.packbits(bits).tobytes()
    if k:
        r = gaps & ((1 << k) - 1)
        shifts = np.arange(k - 1, -1, -1, dtype=np.int64)
        rbits = ((r[:, None] >> shifts) & 1).astype(np.uint8).ravel()
        rem = np.packbits(rbits).tobytes()
    else:
        rem = b""
    return k, unary, rem


def remainder_nbytes(n: int, k: int) -> int:
    """Bytes of the fixed-width remainder stream for ``n`` codes of ``k`` bits."""
    return -(-(n * k) // 8)


def decode_positions(unary: bytes, rem: bytes, n: int, k: int, size: int) -> np.ndarray:
    """Inverse of :func:`encode_positions`; validates every stream against ``n`` and ``size``.

    Raises:
        RiceError: if the streams do not hold exactly ``n`` positions below ``size``.
    """
    if not 0 <= k <= MAX_K:
        raise RiceError(f"Rice parameter {k} out of range")
    if len(rem) != remainder_nbytes(n, k):
        raise RiceError("remainder stream has the wrong length")
    if n == 0:
        if unary:
            raise RiceError("unary stream must be empty when there are no nonzeros")
        return np.zeros(0, dtype=np.int64)
    if len(unary) * 8 < n:
        raise RiceError("unary stream too short")
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8))
    ends = np.flatnonzero(bits == 0)
    if ends.size != n or bits.size - 1 - int(ends[-1]) >= 8:
        raise RiceError("unary stream does not hold the declared number of codes")
    q = np.diff(ends, prepend=-1) - 1
    if k:
        rbits = np.unpackbits(np.frombuffer(rem, dtype=np.uint8))
        if np.any(rbits[n * k :]):
            raise RiceError("nonzero padding in the remainder stream")
        rbits = rbits[: n * k].reshape(n, k).astype(np.int64)
        r = rbits @ (np.int64(1) << np.arange(k - 1, -1, -1, dtype=np.int64))
        if int(q.max()) >= (1 << (62 - k)) // max(n, 1):
            raise RiceError("run length out of range")
        gaps = (q << k) | r
    else:
        gaps = q
    pos = np.cumsum(gaps + 1) - 1
    if int(pos[-1]) >= size:
        raise RiceError("position beyond the end of the array")
    return pos
