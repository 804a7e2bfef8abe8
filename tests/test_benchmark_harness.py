"""The deployment benchmark harness (export/benchmark.py): targets and table, without training."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ssm_benchmark", ROOT / "export" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_quant_qdq_override() -> None:
    """Every session the harness opens uses onnxruntime's own optimizations (issue 12)."""
    text = (ROOT / "export" / "benchmark.py").read_text()
    assert "add_session_config_entry" not in text
    # the harness opens its sessions itself, so that their options are visible here
    assert re.search(r"(?<![_\w])ort_session\(", text) is None


def _results(bench, b64: float, b1: float) -> tuple[dict, list]:
    def lat(speed64: float, speed1: float) -> dict:
        return {
            s: {
                "batch1": {"median_us": 10.0, "speedup_vs_dense_onnx": speed1},
                "batch64": {"median_us": 100.0, "speedup_vs_dense_onnx": speed64},
            }
            for s in bench.SETTINGS
        }

    rows = [
        ("dense", bench.DENSE_ONNX, "onnxruntime", 1_000_000, lat(1, 1)),
        ("signed", bench.SIGNED_FP32, "onnxruntime", 250_000, lat(b64, b1)),
        ("signed", bench.SIGNED_INT8, "onnxruntime", 62_000, lat(b64, b1)),
        ("signed", bench.SIGNED_COMPACT, "keras", 6_000, {}),
    ]
    arts = []
    for group, label, runtime, size, latency in rows:
        art = bench.Artifact(group, label, Path(label), runtime)
        art.result = {
            "accuracy": 0.98 if group == "signed" else 0.975,
            "correct": {"default": 9800} if group == "signed" else {"default": 9750},
            "equals_keras": True,
            "bytes": size,
            "gzip_bytes": size // 2,
            "smaller_than_dense_onnx": round(1_000_000 / size, 1),
            "smaller_gz": round(1_000_000 / size, 1),
            "onnx_ops": ["Cast", "MatMul", "Mul"],
        }
        if latency:
            art.result["latency"] = latency
        arts.append(art)
    res = {
        "test_images": 10_000,
        "keras_correct": {"signed": 9800, "dense": 9750, "tfmot": 9790},
        "int8_vs_fp32_onnx": {s: {"bit_equal": True, "max_abs_diff": 0.0} for s in bench.SETTINGS},
    }
    return res, arts


def test_targets_met_and_missed(bench) -> None:
    res, arts = _results(bench, b64=4.5, b1=2.5)
    got = {t["what"]: t["met"] for t in bench._targets(res, arts)}
    speed64 = [met for what, met in got.items() if what.startswith("batch 64")]
    speed1 = [met for what, met in got.items() if what.startswith("batch 1 ")]
    assert speed64 == [True, True] and speed1 == [False, False]
    assert any("int8 ONNX >= 16x" in w and met for w, met in got.items())  # 16.1x
    assert any("compact .ssm >= 150x" in w and met for w, met in got.items())  # 166.7x
    assert all(met for w, met in got.items() if "accuracy" in w or "bit-equal" in w)


def test_markdown_has_both_settings_and_the_profile(bench) -> None:
    res, arts = _results(bench, b64=3.0, b1=2.0)
    res.update(
        command="python export/benchmark.py --signed-run s --dense-run d",
        signed_run="s",
        dense_run="d",
        tfmot_run="t",
        signed_epochs=100,
        dense_epochs=50,
        tfmot_epochs=100,
        signed_remaining=0.03,
        tfmot_remaining=0.03,
        keras_accuracy={"signed": 0.98, "dense": 0.975, "tfmot": 0.979},
        signed_export={"crop": {"box": [[3, 1], [3, 2]], "features_before": 784}},
        settings={
            "cpu_count": 2,
            "timing_niceness": 0,
            "load_average": {k: (1.0, 1.0, 1.0) for k in ("start", "before", "after")},
        },
        timed_runs_per_median=1000,
        warmup_per_round=10,
        timing_s=20.0,
        wall_s=300.0,
        prepare_wall_s=280.0,
        prepare_niceness=15,
        profiles_batch64_default_us={bench.SIGNED_INT8: {"MatMul": 50.0, "(whole run)": 60.0}},
    )
    res["targets"] = bench._targets(res, arts)
    text = bench._markdown(res, arts)
    assert "b64 us default" in text and "b64 us 1 thread" in text
    assert "-> MISSED" in text and "## Where the time goes" in text
    assert "folds the int8 weights" in text
