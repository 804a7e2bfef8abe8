"""Nothing read from disk is executed: no pickle/eval/exec on file contents, safe_mode=True.

* The package source is grepped for code-running loaders (``pickle.load(s)``, ``eval(``,
  ``exec(``, ``allow_pickle=True``, ``safe_mode=False``, ``marshal``, ``yaml.load``, ...);
  the only vetted hit is ``keras_ssm.data.safe_pickle.SafeUnpickler`` (CIFAR python batches),
  whose ``find_class`` hands out inert stand-ins only.
* Every ``load_model`` / ``deserialize_keras_object`` call passes ``safe_mode=True``.
* Hostile pickles (``os.system``, ``builtins.eval``, ``subprocess.Popen``, memo-index and
  length bombs) are refused with ``DataFormatError`` and run nothing.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import keras_ssm
from keras_ssm import data

PACKAGE = Path(keras_ssm.__file__).parent
FORBIDDEN = {
    "pickle.load/loads": r"\bpickle\.loads?\(",
    "eval(": r"(?<![\w.])eval\(",
    ".eval(": r"\.eval\(",
    "exec(": r"(?<![\w.])exec\(",
    "allow_pickle=True": r"allow_pickle\s*=\s*True",
    "safe_mode=False": r"safe_mode\s*=\s*False",
    "marshal": r"\bmarshal\.",
    "shelve": r"\bshelve\b",
    "yaml.load": r"\byaml\.(unsafe_)?load\(",
    "dill/cloudpickle": r"\b(dill|cloudpickle|joblib)\b",
    "torch.load": r"\btorch\.load\(",
    "__import__(": r"__import__\(",
    "Unpickler": r"\bUnpickler\b",
}
# (file, stripped line): reviewed hits. SafeUnpickler resolves globals only to inert stubs.
VETTED = {
    ("safe_pickle.py", "class SafeUnpickler(pickle.Unpickler):"),
}
SAFE_MODE_CALLS = ("load_model", "deserialize_keras_object")
CIFAR = data.specs.SPECS["cifar10"]


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    return files


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of code, with comments and docstrings blanked out."""
    text = path.read_text()
    lines = text.splitlines()
    blank: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            blank.update(range(body[0].lineno, body[0].end_lineno + 1))
    return [(i, line.split("#")[0]) for i, line in enumerate(lines, 1) if i not in blank]


def test_no_code_running_loaders_in_the_package() -> None:
    hits = []
    for path in _sources():
        for number, line in _code_lines(path):
            for name, pattern in FORBIDDEN.items():
                if re.search(pattern, line) and (path.name, line.strip()) not in VETTED:
                    hits.append(f"{path.relative_to(PACKAGE)}:{number}: {name}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_grep_would_catch_them() -> None:
    bad = [
        "x = pickle.load(f)",
        "pickle.loads(b)",
        "eval(text)",
        "exec(code)",
        "np.load(p, allow_pickle=True)",
        "load_model(p, safe_mode=False)",
        "t.eval()",
    ]
    for line in bad:
        assert any(re.search(p, line) for p in FORBIDDEN.values()), line
    for line in ["model.evaluate(x)", "ast.literal_eval(s)", "np.load(p)"]:
        assert not any(re.search(p, line) for p in FORBIDDEN.values()), line


def test_every_keras_load_uses_safe_mode() -> None:
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in SAFE_MODE_CALLS:
                continue
            safe = [k for k in node.keywords if k.arg == "safe_mode"]
            ok = (
                len(safe) == 1
                and isinstance(safe[0].value, ast.Constant)
                and (safe[0].value.value is True)
            )
            calls.append((f"{path.name}:{node.lineno}", ok))
    assert "run_dir.py" in {c.split(":")[0] for c, _ in calls}, calls  # every run's model.keras
    assert all(ok for _, ok in calls), [c for c, ok in calls if not ok]


class _Evil:
    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _hostile_pickles(marker: Path) -> dict[str, bytes]:
    import builtins
    import subprocess

    command = f"touch {marker}"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}
    return {
        "os.system": pickle.dumps({**batch, b"x": _Evil(os.system, command)}, protocol=2),
        "builtins.eval": pickle.dumps(_Evil(builtins.eval, f"print('{command}')")),
        "builtins.exec": pickle.dumps(_Evil(builtins.exec, f"open('{marker}', 'w')")),
        "subprocess.Popen": pickle.dumps(_Evil(subprocess.Popen, ["touch", str(marker)])),
        "numpy.load": pickle.dumps(_Evil(np.load, str(marker))),
        "as data": pickle.dumps({b"data": _Evil(os.system, command), b"labels": [1]}),
    }


@pytest.mark.parametrize("kind", list(_hostile_pickles(Path("m"))))
def test_restricted_unpickler_refuses_code(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = _hostile_pickles(marker)[kind]
    with pytest.raises(data.DataFormatError, match=r"refusing to load global"):
        data.formats.parse_cifar_batch(CIFAR, blob, "batch")
    assert not marker.exists()


def test_hostile_cifar_folder_is_refused_through_load_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    data.formats.read_cached.cache_clear()
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=2)
    for name in [*CIFAR.py_train, CIFAR.py_test]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_3").write_bytes(_hostile_pickles(marker)["os.system"])
    with pytest.raises(data.DataFormatError, match=r"data_batch_3.*refusing to load global"):
        data.load_arrays("cifar10", tmp_path)
    assert not marker.exists()


def test_a_benign_pickle_still_loads() -> None:
    rows = np.arange(3072, dtype=np.uint8)[None]
    for protocol in (2, 3, 4, 5):
        blob = pickle.dumps({b"data": rows, b"labels": [7]}, protocol=protocol)
        images, labels = data.formats.parse_cifar_batch(CIFAR, blob, "batch")
        assert images.shape == (1, 32, 32, 3) and labels.tolist() == [7]


@pytest.mark.parametrize(
    "blob, message",
    [
        # LONG_BINPUT 2**31-1: the C unpickler would grow its memo to 16 GB first
        (b"\x80\x02}r\xff\xff\xff\x7f.", r"memo index 2147483647"),
        # BINBYTES8 declaring 2**62 bytes: allocated before reading
        (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc.", r"bytes8"),
        # BINUNICODE8, BYTEARRAY8 likewise
        (b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"abc.", r"unicodestring8"),
        (b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"abc.", r"bytearray8"),
        # FRAME declaring 2**60 bytes
        (b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"}.", r"corrupt pickle"),
    ],
    ids=["memo", "bytes8", "unicode8", "bytearray8", "frame"],
)
def test_pickle_length_bombs_are_refused_before_allocating(blob: bytes, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(data.DataFormatError, match=message):
        data.formats.parse_cifar_batch(CIFAR, blob, "batch")
    assert time.perf_counter() - start < 1.0


def test_label_list_bomb_is_refused() -> None:
    """Memo references make a list of 1000 references to a 1000-item list from ~10 KB:
    ``np.asarray`` would expand it (quadratically); labels must be a flat list of ints."""
    inner = list(range(1000))
    blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [inner] * 1000})
    assert len(blob) < 20_000
    with pytest.raises(data.DataFormatError, match=r"'labels' must be a list of integers"):
        data.formats.parse_cifar_batch(CIFAR, blob, "batch")
    huge = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [2**70]})
    with pytest.raises(data.DataFormatError, match=r"out-of-range label"):
        data.formats.parse_cifar_batch(CIFAR, huge, "batch")


def test_npz_with_pickled_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "test.npz"
    np.savez(
        path,
        x_test=np.zeros((1, 32, 32, 3), np.uint8),
        y_test=np.array([_Evil(os.system, "true")], dtype=object),
    )
    with pytest.raises(data.DataFormatError, match=r"expected integer labels"):
        data.formats.read_npz_split(CIFAR, str(path), "test")


def test_keras_lambda_in_ssm_summary_is_refused(tmp_path: Path, capsys) -> None:
    import keras

    from keras_ssm import cli

    marker = str(tmp_path / "pwned")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Lambda(lambda x: x + float(open(marker, "w").close() or 0)),
            keras_ssm.layers.MaskedDense(2),
        ]
    )
    os.unlink(marker)
    model.save(tmp_path / "lam.keras")
    assert cli.main(["summary", str(tmp_path / "lam.keras")]) == 2
    assert re.search(r"cannot load .*(unsafe|safe_mode|Lambda)", capsys.readouterr().err)
    assert not os.path.exists(marker)


def test_npy_header_is_not_evaluated(tmp_path: Path) -> None:
    """numpy literal-evals the .npy header text; a call in it must be a format error."""
    header = b"{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (1,)}"
    header += b" " * (63 - len(header) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00"
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("x_test.npy", npy)
        archive.writestr("y_test.npy", npy)
    (tmp_path / "test.npz").write_bytes(buf.getvalue())
    with pytest.raises(data.DataFormatError, match=r"corrupt .npy header"):
        data.formats.read_npz_split(CIFAR, str(tmp_path / "test.npz"), "test")
