"""CIFAR-10 in carryable pieces for a lent GPU machine (see scripts/device_run.sh).

A device call carries at most 64 MiB and the machine has no registry and no ``../shared``; the
CIFAR-10 npz files are 170 MB.  ``pack`` stores each file's arrays losslessly, the images as
byte differences along each row (mod 256) compressed with LZMA (about 67% of the raw bytes),
in two folders of about 57 MB, one per call; ``unpack`` (on the device) rebuilds the npz files
bit for bit, and ``check`` verifies a round trip here.

    python scripts/device_data.py pack ../shared/datasets/cifar10 .data
    python scripts/device_data.py check ../shared/datasets/cifar10 .data
    python scripts/device_data.py unpack .data/a .data/b --out .data/cifar10   # on the device

The standard library, numpy and keras_ssm's atomic writes: it runs under the device's own
python3 (with the repository on ``PYTHONPATH``, as scripts/device_run.sh sets it).
"""

from __future__ import annotations

import argparse
import io
import lzma
import sys
from pathlib import Path

import numpy as np

from keras_ssm.atomic import atomic_write_bytes

# Two carries of three files each: 3 x ~19 MB compressed per call.
PIECES = {
    "a": ("train_part1.npz", "train_part2.npz", "train_part3.npz"),
    "b": ("train_part4.npz", "train_part5.npz", "test.npz"),
}


def _encode(images: np.ndarray) -> bytes:
    deltas = np.diff(images, axis=2, prepend=np.zeros_like(images[:, :, :1]))  # uint8, mod 256
    return lzma.compress(np.ascontiguousarray(deltas).tobytes(), preset=6)


def _decode(payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
    deltas = np.frombuffer(lzma.decompress(payload), np.uint8).reshape(shape)
    return np.cumsum(deltas, axis=2, dtype=np.uint8)


def pack(source: Path, out: Path) -> None:
    for piece, names in PIECES.items():
        folder = out / piece
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            with np.load(source / name) as arrays:
                images_key = next(k for k in arrays.files if k.startswith("x_"))
                labels_key = next(k for k in arrays.files if k.startswith("y_"))
                images, labels = arrays[images_key], arrays[labels_key]
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(f"{name}: expected uint8 NHWC images, got {images.dtype}")
            header = io.BytesIO()
            np.savez(
                header, labels=labels, shape=np.array(images.shape), keys=[images_key, labels_key]
            )
            atomic_write_bytes(folder / f"{name}.meta", header.getvalue(), overwrite=True)
            atomic_write_bytes(folder / f"{name}.xz", _encode(images), overwrite=True)
            print(f"{piece}/{name}: {(folder / f'{name}.xz').stat().st_size / 1e6:.1f} MB")


def unpack(pieces: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for folder in pieces:
        for meta in sorted(folder.glob("*.npz.meta")):
            name = meta.name[: -len(".meta")]
            with np.load(meta) as header:
                labels, shape = header["labels"], tuple(int(n) for n in header["shape"])
                images_key, labels_key = (str(k) for k in header["keys"])
            images = _decode((folder / f"{name}.xz").read_bytes(), shape)
            buffer = io.BytesIO()
            np.savez(buffer, **{images_key: images, labels_key: labels})
            atomic_write_bytes(out / name, buffer.getvalue(), overwrite=True)
            print(f"{out / name}: {images.shape}")


def check(source: Path, packed: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        unpack([packed / piece for piece in PIECES], Path(tmp))
        for names in PIECES.values():
            for name in names:
                with np.load(source / name) as want, np.load(Path(tmp) / name) as got:
                    assert sorted(want.files) == sorted(got.files), name
                    for key in want.files:
                        np.testing.assert_array_equal(want[key], got[key], err_msg=name)
    print("round trip: bit-exact")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("unpack")
    p.add_argument("pieces", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("check")
    p.add_argument("source", type=Path)
    p.add_argument("packed", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.source, args.out)
    elif args.command == "unpack":
        unpack(args.pieces, args.out)
    else:
        check(args.source, args.packed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
