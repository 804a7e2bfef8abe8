"""Atomic file writes: write to a temporary file beside the target, rename on success.

Every file keras_ssm writes goes through here (bytes, text, JSON, ``.keras`` models, figures),
so it is complete or absent, and gets the permissions the user's umask gives a new file (like
any other tool: ``0644`` under the usual umask ``022``).

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "out.bin")) as tmp:
    ...     with open(tmp, "wb") as f:
    ...         _ = f.write(b"ok")
    >>> sorted(os.listdir(d))
    ['out.bin']
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_mode",
    "place",
    "replace_block",
    "save_figure",
    "save_model",
    "write_json",
]


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path in the target's directory; move it to ``path`` on success.

    The temporary file is removed if the block raises, so a failed write leaves nothing
    on disk. Without ``overwrite`` an existing ``path`` is never replaced: a
    ``FileExistsError`` naming it is raised before any work is done (and again, atomically,
    at the rename if the file appeared meanwhile).

    Args:
        path: Final destination.
        overwrite: Replace an existing file at ``path``.

    Yields:
        The temporary path to write to (it exists and is empty).
    """
    final = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(final))
    if not overwrite and os.path.lexists(final):
        raise FileExistsError(f"{final!r} already exists (pass overwrite=True to replace it)")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} does not exist")
    # Keep the destination's extension last: some writers (Keras, matplotlib) go by it.
    suffix = ".tmp" + os.path.splitext(final)[1]
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(final) + ".", suffix=suffix, dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; a finished file gets the usual mode
        place(tmp, final, overwrite=overwrite)
    finally:
        _remove_quietly(tmp)


def file_mode() -> int:
    """The mode a new file gets under the process' umask (``0o644`` for the usual ``022``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def place(
    src: str | os.PathLike[str], path: str | os.PathLike[str], overwrite: bool = False
) -> None:
    """Move the finished file ``src`` to ``path`` in one step (same file system).

    Without ``overwrite`` an existing ``path`` is never replaced: ``FileExistsError`` names it.
    """
    src, final = os.fspath(src), os.fspath(path)
    if overwrite:
        os.replace(src, final)
        return
    try:
        os.link(src, final)  # atomic "create only if absent"
    except FileExistsError:
        raise FileExistsError(
            f"{final!r} already exists (pass overwrite=True to replace it)"
        ) from None
    except OSError:  # file system without hard links
        if os.path.lexists(final):
            raise FileExistsError(
                f"{final!r} already exists (pass overwrite=True to replace it)"
            ) from None
        os.replace(src, final)
        return
    _remove_quietly(src)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write_bytes(p, b"abc")
        >>> open(p, "rb").read()
        b'abc'
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; replaces by default."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def replace_block(path: str | os.PathLike[str], begin: str, end: str, text: str) -> None:
    """Replace what lies between the marker lines ``begin`` and ``end`` of a text file (a
    generated table inside a hand-written README) with ``text``, atomically.

    Raises:
        ValueError: the file lacks one of the markers (nothing is written).

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "README.md")
        >>> _ = open(p, "w").write("intro\\n<!-- t -->\\nold\\n<!-- /t -->\\nend\\n")
        >>> replace_block(p, "<!-- t -->", "<!-- /t -->", "| new |")
        >>> print(open(p).read(), end="")
        intro
        <!-- t -->
        | new |
        <!-- /t -->
        end
    """
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if begin not in doc or end not in doc.split(begin, 1)[1]:
        raise ValueError(f"{os.fspath(path)} has no {begin} ... {end} block to replace")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{begin}\n{text}\n{end}{tail}")


def write_json(path: str | os.PathLike[str], obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as indented JSON (non-JSON values via ``str``) to ``path`` atomically.

    Example:
        >>> import json, os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "m.json")
        >>> write_json(p, {"accuracy": 0.98})
        >>> json.load(open(p))
        {'accuracy': 0.98}
    """
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", overwrite=overwrite)


def save_model(model: Any, path: str | os.PathLike[str], overwrite: bool = True) -> None:
    """``model.save`` to a temporary ``.keras`` file beside ``path``, then one rename."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"a Keras model file must end in .keras; got {os.fspath(path)!r}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        os.remove(tmp)  # Keras refuses to overwrite without asking
        model.save(tmp)


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> None:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
