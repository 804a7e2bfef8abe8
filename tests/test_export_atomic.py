"""atomic_path: temp file + rename, cleanup on failure, no silent overwrite."""

from __future__ import annotations

import os

import pytest

from keras_ssm.export import atomic_path, atomic_write_bytes


def test_success_renames(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_failure_removes_temp(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.bin") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_no_overwrite_unless_asked(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="a.bin"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    atomic_write_bytes(target, b"new", overwrite=True)
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_file_appearing_meanwhile_is_not_clobbered(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(FileExistsError):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"mine")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "nope" / "a.bin", b"x")
