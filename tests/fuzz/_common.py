"""Shared driver of the fuzz harnesses: engines, outcome counting, crash files, peak RSS.

A harness defines ``seeds() -> list[bytes]`` and ``target(data: bytes) -> str`` (an outcome
label such as ``"ok"``); ``target`` may raise only the harness's documented exceptions, which
are counted by type. Any other exception is a *crash*: it is counted, its input is saved to
``--crash-dir`` and the run exits with status 1 at the end.

Engines:

* ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``): the harness's own modules
  are instrumented, the seeds are its starting corpus, ``-rss_limit_mb`` bounds memory and
  ``-timeout`` flags hangs.
* ``random``: a seeded, dependency-free mutator of the same seeds (bit flips, interesting
  integers, inserts, deletes, splices, number swaps); what the test suite runs.

Crashing inputs (and libFuzzer's oom-/timeout- artifacts) go to ``--crash-dir`` (default: the
system temp folder, ``keras_ssm-fuzz-crashes/<harness>``); scratch folders are removed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

Target = Callable[[bytes], str]
TEMP_DIRS: list[str] = []  # scratch folders of a run (corpus, harness files), removed at the end


def make_temp_dir(prefix: str, in_memory: bool = False) -> str:
    """A scratch folder removed when the run ends (``/dev/shm`` when ``in_memory``)."""
    where = "/dev/shm" if in_memory and os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix=prefix, dir=where)
    TEMP_DIRS.append(path)
    return path


def cleanup() -> None:
    while TEMP_DIRS:
        shutil.rmtree(TEMP_DIRS.pop(), ignore_errors=True)


INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_NUMBERS = (
    b"0",
    b"-1",
    b"1",
    b"3",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"99999999",
    b"1e308",
    b"-0",
    b"2.5",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"x"',
    b"[-1]",
    b"[0]",
    b"[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]",
)


class Stats:
    """Outcomes by label and exception type; crashes with their first traceback."""

    def __init__(self, documented: tuple[type[BaseException], ...], crash_dir: Path) -> None:
        self.documented = documented
        self.crash_dir = crash_dir
        self.outcomes: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.crashes: Counter[str] = Counter()
        self.crash_examples: dict[str, str] = {}
        self.inputs = 0
        self.slowest = 0.0
        self.start = time.perf_counter()

    def run_one(self, target: Target, data: bytes) -> None:
        self.inputs += 1
        t0 = time.perf_counter()
        try:
            self.outcomes[target(data)] += 1
        except self.documented as err:
            self.outcomes[type(err).__name__] += 1
            self.messages[re.sub(r"[0-9]+", "N", str(err))[:70]] += 1
        except Exception as err:  # a crash: anything undocumented
            key = f"{type(err).__name__} at {_where(err)}"
            self.crashes[key] += 1
            if key not in self.crash_examples:
                self.crash_examples[key] = traceback.format_exc()
                self.crash_dir.mkdir(parents=True, exist_ok=True)
                name = f"crash-{len(self.crash_examples)}-{type(err).__name__}.bin"
                (self.crash_dir / name).write_bytes(data)
        self.slowest = max(self.slowest, time.perf_counter() - t0)

    def report(self, name: str, engine: str, detail: bool = False) -> str:
        wall = time.perf_counter() - self.start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines = [
            f"[{name}] engine={engine} inputs={self.inputs} crashes={sum(self.crashes.values())} "
            f"wall={wall:.1f}s peak_rss={peak:.0f}MB slowest_input={self.slowest * 1000:.1f}ms",
            "  outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
        ]
        if detail:
            lines += [f"    {v:7d}  {k}" for k, v in self.messages.most_common()]
        for key, count in self.crashes.items():
            lines.append(f"  CRASH x{count}: {key}")
            lines.append("    " + self.crash_examples[key].strip().replace("\n", "\n    "))
        return "\n".join(lines)


def _where(err: BaseException) -> str:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return "?"
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


# ----------------------------------------------------------------------------- random engine


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One to eight stacked random edits of ``data`` (``pool`` supplies splice partners)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting or random byte
            buf[rng.randrange(n)] = rng.choice((*INTERESTING, rng.randrange(256)))
        elif op == 2 and n >= 4:  # an interesting 32-bit integer, either endianness
            i = rng.randrange(n - 3)
            value = rng.choice((0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, rng.randrange(1 << 32)))
            buf[i : i + 4] = value.to_bytes(4, rng.choice(("little", "big")))
        elif op == 3:  # insert random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 4 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 17)]
        elif op == 5 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 6 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 65))
            buf[j:j] = buf[i:j]
        elif op == 7 and pool:  # splice with another input
            other = rng.choice(pool)
            if other and n:
                i, j = rng.randrange(n), rng.randrange(len(other))
                buf = buf[:i] + bytearray(other[j:])
        elif op in (8, 9):  # swap a number (or JSON token) for an interesting one
            digits = [i for i in range(n) if 48 <= buf[i] <= 57]
            if digits:
                i = rng.choice(digits)
                j = i
                while j < n and (48 <= buf[j] <= 57 or buf[j] in b".-e"):
                    j += 1
                buf[i:j] = rng.choice(INTERESTING_NUMBERS)
    return bytes(buf)


def run_random(target: Target, seeds: list[bytes], count: int, stats: Stats, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = list(seeds)
    for data in seeds[:count]:
        stats.run_one(target, data)
    while stats.inputs < count:
        base = rng.choice(pool)
        data = mutate(base, rng, pool)
        stats.run_one(target, data)
        if rng.random() < 0.05:  # keep some mutants as new bases (no coverage feedback)
            pool.append(data)
            if len(pool) > 512:
                del pool[len(seeds) + rng.randrange(len(pool) - len(seeds))]


# ----------------------------------------------------------------------------- atheris engine


def run_atheris(
    target: Target,
    seeds: list[bytes],
    count: int,
    stats: Stats,
    name: str,
    rss_limit_mb: int,
    timeout_s: int,
    seed: int,
    detail: bool = False,
) -> None:
    import atheris

    corpus = Path(make_temp_dir(f"{name}-corpus-"))
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(data)

    def one(data: bytes) -> None:
        stats.run_one(target, data)
        if stats.inputs >= count:
            print(stats.report(name, "atheris", detail), flush=True)
            cleanup()
            os._exit(1 if stats.crashes else 0)

    max_len = max(4096, 2 * max(len(s) for s in seeds))
    argv = [
        sys.argv[0],
        f"-runs={count * 10}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-timeout={timeout_s}",
        f"-seed={seed + 1}",
        f"-max_len={max_len}",
        f"-artifact_prefix={stats.crash_dir}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    stats.crash_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, one)
    atheris.Fuzz()


def main(name: str, load: Callable[[], tuple[Target, list[bytes], tuple[type, ...]]]) -> int:
    """Parse ``-n/--engine/...``, build the harness with ``load`` (keras_ssm instrumented under
    atheris, so ``load`` must import keras_ssm itself) and fuzz it."""
    parser = argparse.ArgumentParser(description=f"fuzz {name}")
    parser.add_argument("-n", "--inputs", type=int, default=100_000, help="inputs to run")
    parser.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rss-limit-mb", type=int, default=3072)
    parser.add_argument("--timeout-s", type=int, default=30, help="per input (atheris)")
    parser.add_argument("--detail", action="store_true", help="count errors by message")
    parser.add_argument(
        "--crash-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "keras_ssm-fuzz-crashes" / name,
    )
    args = parser.parse_args()
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["keras_ssm"]):
            target, seeds, documented = load()
        # The harness's own dispatch (input forms, edit scripts) counts as coverage too, so
        # libFuzzer keeps one seed per form instead of the smallest input that loads.
        harness = sys.modules["__main__"]
        for value in list(vars(harness).values()):
            if getattr(value, "__module__", None) == "__main__" and hasattr(value, "__code__"):
                atheris.instrument_func(value)
            elif isinstance(value, type) and value.__module__ == "__main__":
                for member in vars(value).values():
                    if hasattr(member, "__code__"):
                        atheris.instrument_func(member)
    else:
        target, seeds, documented = load()
    stats = Stats(documented, args.crash_dir)
    if args.engine == "atheris":
        run_atheris(
            target,
            seeds,
            args.inputs,
            stats,
            name,
            args.rss_limit_mb,
            args.timeout_s,
            args.seed,
            args.detail,
        )
    try:
        run_random(target, seeds, args.inputs, stats, seed=args.seed)
    finally:
        cleanup()
    print(stats.report(name, "random", args.detail), flush=True)
    return 1 if stats.crashes else 0
