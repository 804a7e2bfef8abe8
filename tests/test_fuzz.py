"""Short fuzz runs of the project's parsers (the long ones: ``tests/fuzz/*.py -n 100000``).

In-process, with the dependency-free random engine of ``tests/fuzz/_common.py`` on the same
harnesses and seeds as the coverage-guided atheris runs; any exception other than the
documented one (``CompactFormatError``, ``DataFormatError``) fails the test. Inputs that once
crashed a parser are replayed from ``tests/fuzz/regressions`` and the cases below.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

FUZZ = Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import _common  # noqa: E402
import fuzz_compact  # noqa: E402
import fuzz_data  # noqa: E402

from keras_ssm import data  # noqa: E402


def _run(harness, count: int, tmp_path: Path) -> _common.Stats:  # noqa: ANN001
    target, seeds, documented = harness.load()
    stats = _common.Stats(documented, tmp_path / "crashes")
    try:
        _common.run_random(target, seeds, count, stats, seed=1234)
    finally:
        _common.cleanup()
    report = stats.report(harness.__name__, "random", detail=True)
    print(report)
    assert stats.inputs == count
    assert not stats.crashes, report
    return stats


def test_fuzz_compact_short(tmp_path: Path) -> None:
    stats = _run(fuzz_compact, 2000, tmp_path)
    assert stats.outcomes["loaded"] >= 20  # the seeds (all five forms) load
    assert stats.outcomes["CompactFormatError"] > 1500


def test_fuzz_data_short(tmp_path: Path) -> None:
    stats = _run(fuzz_data, 6000, tmp_path)
    assert stats.outcomes["DataFormatError"] > 4000
    assert sum(v for k, v in stats.outcomes.items() if k.startswith("read form")) >= 20


@pytest.fixture(autouse=True)
def _scratch_removed():  # noqa: ANN202
    yield
    _common.cleanup()


def test_compact_regressions(tmp_path: Path) -> None:
    target, _, documented = fuzz_compact.load()
    files = sorted((FUZZ / "regressions").glob("compact-*.bin"))
    assert files
    for path in files:
        with pytest.raises(documented):
            target(path.read_bytes())


def _npz(x_npy: bytes, flag_bits: int = 0) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x_test.npy", x_npy)
        archive.writestr("y_test.npy", fuzz_data.npy_bytes(np.array([1])))
    blob = bytearray(out.getvalue())
    if flag_bits:  # general-purpose flags of the first local header and central entry
        blob[6:8] = struct.pack("<H", flag_bits)
        central = blob.find(b"PK\x01\x02")
        blob[central + 8 : central + 10] = struct.pack("<H", flag_bits)
    return bytes(blob)


def _npy_with_header(text: bytes) -> bytes:
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


GOOD_X = fuzz_data.npy_bytes(np.zeros((1, 32, 32, 3), np.uint8))
DATA_REGRESSIONS = {
    # numpy tokenizes the header: an unclosed paren raised tokenize.TokenError
    "npy-header-token-error": b"\x04"
    + _npz(_npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (1,")),
    # zipfile: "compressed patched data (flag bit 5)" raised NotImplementedError
    "zip-flag-bit-5": b"\x04" + _npz(GOOD_X, flag_bits=1 << 5),
    # zipfile: an encrypted member raised RuntimeError
    "zip-encrypted": b"\x04" + _npz(GOOD_X, flag_bits=1),
    # BUILD on a bytes object raised AttributeError from the unpickler
    "pickle-build-on-bytes": b"\x06\x80\x02C\x01a}b.",
    # BINBYTES8 beyond sys.maxsize raised OverflowError
    "pickle-bytes8-overflow": b"\x06\x80\x04\x8e" + struct.pack("<Q", 2**63 + 5) + b".",
    # LONG_BINPUT 2**31: the memo grew to 16 GB (MemoryError or the OOM killer)
    "pickle-memo-bomb": b"\x06\x80\x02}r\x00\x00\x00\x80.",
    # labels [2**70]: np.asarray(dtype=int64) raised OverflowError
    "pickle-label-overflow": b"\x06"
    + __import__("pickle").dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [2**70]}),
}


@pytest.mark.parametrize("name", list(DATA_REGRESSIONS))
def test_data_regressions(name: str) -> None:
    target, _, _ = fuzz_data.load()
    with pytest.raises(data.DataFormatError):
        target(DATA_REGRESSIONS[name])


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_harness_runs(tmp_path: Path) -> None:
    """The coverage-guided driver itself works (a few thousand inputs, in a subprocess)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_data.py"),
            "-n",
            "2000",
            "--crash-dir",
            str(tmp_path / "crashes"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[data] engine=atheris inputs=2000 crashes=0" in result.stdout
