"""The deployment benchmark harness (export/benchmark.py): targets and table, without training."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script(relative: str, name: str):
    """Import a script of the repository (not a package module) by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script("export/benchmark.py", "ssm_benchmark")


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
        ("signed", bench.SIGNED_INT2, "onnxruntime", 70_000, lat(b64, b1)),
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
        "int2_vs_fp32_onnx": {
            s: {"bit_equal": s != "default", "max_abs_diff": 1e-7} for s in bench.SETTINGS
        },
    }
    return res, arts


def test_targets_met_and_missed(bench) -> None:
    res, arts = _results(bench, b64=4.5, b1=2.5)
    got = {t["what"]: t["met"] for t in bench._targets(res, arts)}
    speed64 = [met for what, met in got.items() if what.startswith("batch 64")]
    speed1 = [met for what, met in got.items() if what.startswith("batch 1 ")]
    assert speed64 == [True, True] and speed1 == [False, False]
    assert any("int8 ONNX >= 16x" in w and met for w, met in got.items())  # 16.1x
    assert any("int2 ONNX (`--code-bits 2`) >= 16x" in w and not met for w, met in got.items())
    assert any("compact .ssm >= 150x" in w and met for w, met in got.items())  # 166.7x
    assert all(met for w, met in got.items() if "accuracy" in w or "int8 ONNX outputs" in w)
    assert [met for w, met in got.items() if "int2 ONNX outputs" in w] == [False]  # not bit-equal
    del res["int2_vs_fp32_onnx"]  # a result file from before the int2 file: no such check
    assert not [t for t in bench._targets(res, arts) if "int2 ONNX outputs" in t["what"]]


@pytest.mark.parametrize(("correct", "b64", "met"), [(9750, 2.5, True), (9650, 2.5, False),
                                                      (9750, 1.5, False)])  # fmt: skip
def test_structure_aware_rows_target_the_unstructured_accuracy(bench, correct, b64, met) -> None:
    """A convnet page with --structured-run checks Conv6's target on those rows: batch 64 >= 2x
    at accuracy within 1 point of the unstructured signed run (9,800 correct here)."""
    res, arts = _results(bench, b64=3.0, b1=2.0)
    res["model"] = "conv4"
    art = bench.Artifact("structured", f"{bench.STRUCTURED} fold+shrink ONNX fp32", Path("s"),
                         "onnxruntime")  # fmt: skip
    art.result = {**arts[1].result, "correct": {"default": correct}, "accuracy": correct / 1e4}
    art.result["latency"] = {
        s: {b: {**v, "speedup_vs_dense_onnx": b64 if b == "batch64" else 9.0}
            for b, v in arts[1].result["latency"][s].items()} for s in bench.SETTINGS
    }  # fmt: skip
    res["keras_correct"]["structured"] = correct
    got = [t for t in bench._targets(res, [*arts, art]) if "within 1 point" in t["what"]]
    assert len(got) == 1 and got[0]["met"] is met, got
    assert got[0]["got"] == f"{b64:.2f}x; {(correct - 9800) / 1e4:+.2%} accuracy"
    # without the structured rows there is no such target
    assert not [t for t in bench._targets(res, arts) if "within 1 point" in t["what"]]


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
        signed_export={
            "crop": {"box": [[3, 1], [3, 2]], "features_before": 784},
            "onnx_channel_alignment": {"multiple": 16, "filters": {"conv1": [57, 64]}},
        },
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
        profiles_batch64_default_us={
            bench.SIGNED_INT8: {"MatMul": 50.0, "(whole run)": 60.0},
            bench.SIGNED_FP32: {"MatMul": 50.0, "(whole run)": 80.0},
        },
        heaviest_nodes_batch64_default_us={
            bench.DENSE_ONNX: {"dense_1 (MatMul)": 120.0},
            bench.SIGNED_FP32: {"dense_1 (MatMul)": 40.0, "elu (Elu)": 8.0},
        },
    )
    res["targets"] = bench._targets(res, arts)
    text = bench._markdown(res, arts)
    assert "b64 us default" in text and "b64 us 1 thread" in text
    assert "-> MISSED" in text and "## Where the time goes" in text
    assert "folds the int8 weights" in text
    assert "## The heaviest nodes" in text
    assert "padded with zero filters to multiples of 16 for onnxruntime's blocked " in text
    assert "convolutions: conv1 57 -> 64" in text
    assert f"- {bench.SIGNED_FP32}: dense_1 (MatMul) 40.0 (50%), elu (Elu) 8.0 (10%)" in text
    assert f"- {bench.DENSE_ONNX}: dense_1 (MatMul) 120.0\n" in text  # no whole run: no share
    assert "TF-MOT: `t` (trained from scratch for 100 epochs, remaining 3.0000%" in text
    # a TF-MOT run that pruned the trained dense run while fine-tuning says so
    res.update(tfmot_epochs=20, tfmot_from_dense={"run": "d", "epochs": 50})
    text = bench._markdown(res, arts)
    assert "TF-MOT: `t` (pruned while fine-tuning the trained dense run `d` for 20 epochs" in text
    res["tfmot_sparsity_shortfall"] = {"dense1": 0.002}
    assert "short of the signed run's per-layer sparsity by {'dense1': 0.002}" in bench._markdown(
        res, arts
    )
    res["tfmot_sparsity_shortfall"] = None
    res.update(structured_run="u", structured_epochs=100, structured_remaining=0.009,
               structured_unit_penalty=0.003)  # fmt: skip
    res["keras_accuracy"]["structured"] = 0.97
    text = bench._markdown(res, arts)
    assert "- structure-aware signed run: `u` (100 epochs, unit penalty 0.003, remaining " in text
    assert ", structure-aware signed 0.9700;" in text


def test_profile_per_operator_and_heaviest_nodes(bench, tmp_path) -> None:
    """The profiler's per-operator sums and heaviest nodes come from the same node times."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(64, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(256, 8)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="big"),
            helper.make_node("Elu", ["h"], ["a"], name="act"),
            helper.make_node("MatMul", ["a", "w2"], ["y"], name="small"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    per_op, heaviest = bench._profile(path, np.ones((64, 64), np.float32), runs=20, top=2)
    assert set(per_op) >= {"Elu", "(whole run)"} and per_op["(whole run)"] > 0
    assert len(heaviest) == 2 and all(re.fullmatch(r".+ \(\w+\)", k) for k in heaviest)
    assert list(heaviest.values()) == sorted(heaviest.values(), reverse=True)
    for node, us in heaviest.items():  # a node's time is part of its operator type's sum
        assert us <= per_op[node.rsplit(" (", 1)[1][:-1]] + 1e-9, (node, per_op)


@pytest.fixture(scope="module")
def summary():
    return _load_script("export/summary.py", "ssm_summary")


def test_summary_row_reads_the_result_file(summary) -> None:
    def art(label: str, size: int, speed: tuple[float, float] | None) -> dict:
        out = {"label": label, "bytes": size, "smaller_than_dense_onnx": 1_000_000 / size}
        if speed is not None:
            pairs = zip((1, 64), speed, strict=True)
            cells = {f"batch{b}": {"speedup_vs_dense_onnx": v} for b, v in pairs}
            out["latency"] = {"default": cells, "1 thread": cells}
        return out

    res = {
        "model": "conv4",
        "signed_run": "runs/paper/conv4_signed_default_s7531",
        "signed_remaining": 0.0123,
        "keras_accuracy": {"signed": 0.8, "dense": 0.79, "tfmot": None},
        "signed_export": {"shrink_report": {"layers": [{"units_after": 5}, {"units_after": 7}]}},
        "artifacts": [
            art("signed fold+shrink ONNX fp32", 250_000, (2.5, 4.25)),
            art("signed fold+shrink ONNX int8 (exact)", 62_500, (2.5, 4.25)),
            art("signed fold+shrink ONNX int2 (exact)", 20_000, (2.5, 4.25)),
            art("signed compact .ssm", 5_000, None),
        ],
    }
    text = summary.row(res, "export/RESULTS_conv4.md")
    cells = [c.strip() for c in text.strip("|").split("|")]
    assert len(cells) == len(summary.COLUMNS)
    assert cells[:5] == ["Conv4", "`conv4_signed_default_s7531`", "80.00% / 79.00% / -", "1.23%",
                         "5-7"]  # fmt: skip
    assert cells[5] == "200.0x (5.0 KB)" and cells[6] == "16.0x (62.5 KB)"
    assert cells[7] == "50.0x (20.0 KB)"
    assert cells[8] == cells[9] == "2.50x / 4.25x" and cells[10] == "-"  # no LiteRT file
    assert cells[11] == "-"  # the file does not name its CPU
    res["settings"] = {"cpu": "2 CPU cores (x86_64, Intel(R) Xeon(R) Processor; amx_bf16)"}
    assert summary.row(res, "r.md").split("|")[12].strip() == "Intel Xeon (AMX)"
    res["artifacts"].pop(2)  # a result file from before the int2 file
    assert [c.strip() for c in summary.row(res, "r.md").strip("|").split("|")][7] == "-"
    # a page with a second, structure-aware run: its own row, without a TF-MOT accuracy
    res.update(structured_run="x/conv4_signed_default_up0.003_s7531", structured_remaining=0.009,
               structured_export={"shrink_report": {"layers": [{"units_after": 3}]}})  # fmt: skip
    res["keras_accuracy"].update(structured=0.75, tfmot=0.7)
    res["artifacts"] += [art("structure-aware signed fold+shrink ONNX fp32", 100_000, (4.0, 5.0)),
                         art("structure-aware signed compact .ssm", 4_000, None)]  # fmt: skip
    cells = [c.strip() for c in summary.row(res, "r.md", "structured").strip("|").split("|")]
    assert cells[1:6] == ["`conv4_signed_default_up0.003_s7531`", "75.00% / 79.00% / -", "0.90%",
                          "3", "250.0x (4.0 KB)"]  # fmt: skip
    assert cells[6] == "-" and cells[8] == "4.00x / 5.00x"
    assert summary.row(res, "r.md").split("|")[3].strip() == "80.00% / 79.00% / 70.00%"


def test_readme_deployment_table_is_generated_from_the_results(summary) -> None:
    """The README's deployment table is exactly what export/summary.py makes of the committed
    export/RESULTS*.json files (rerun ``python export/summary.py --write README.md``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(summary.BEGIN, 1)[1].split(summary.END, 1)[0].strip()
    assert block == summary.table(summary.default_paths())
    # and the frontier table, of the committed export/FRONTIER_*.json files
    frontier = summary.default_paths("FRONTIER_*.json")
    assert frontier, "no export/FRONTIER_*.json committed"
    block = readme.split(summary.FRONTIER_BEGIN, 1)[1].split(summary.FRONTIER_END, 1)[0].strip()
    assert block == summary.frontier_table(frontier)


def test_graph_timing_variants_compute_the_same_function() -> None:
    """export/graph_timing.py times crop / no crop / MatMul variants of one FCN: they must be
    the same function, or the timings compare different work."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    timing = _load_script("export/graph_timing.py", "ssm_timing")
    x = {"input": np.random.default_rng(0).random((5, 28, 28, 1), np.float32)}
    box = timing.BOXES[1]
    outs, ops = {}, {}
    for kind in timing.KINDS:
        data = timing.graph(box, 16, kind)
        ops[kind] = [n.op_type for n in onnx.load_from_string(data).graph.node]
        outs[kind] = ort.InferenceSession(data).run(None, x)[0]
    assert ops["crop"][0] == "Slice" and "Slice" not in ops["no crop"]
    assert "Gemm" in ops["no crop"] and "MatMul" in ops["no crop, MatMul"]
    for kind in timing.KINDS:
        np.testing.assert_allclose(outs[kind], outs["no crop"], rtol=1e-5, atol=1e-7)


def test_readme_training_table_is_generated_from_the_results() -> None:
    """The README's training-speed table is what examples/bench_train.py makes of the committed
    examples/results/bench_train_*.json files (``--table ... --write README.md``)."""
    bench_train = _load_script("examples/bench_train.py", "ssm_bench_train")
    files = sorted(str(p) for p in (ROOT / "examples" / "results").glob("bench_train_*.json"))
    assert files
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(bench_train.BEGIN, 1)[1].split(bench_train.END, 1)[0].strip()
    assert block == bench_train.table(files)


def test_bench_mask_step_times_every_probe(tmp_path: Path) -> None:
    """examples/bench_mask_step.py trains the dense FCN and its three masked variants (its two
    probe masks register by name, in their own process) and writes their step times."""
    out = tmp_path / "times.json"
    cmd = [sys.executable, str(ROOT / "examples" / "bench_mask_step.py"), "--rounds", "2"]
    cmd += ["--steps", "1", "--batch", "4", "--json", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["dense", "scores", "ste-identity", "signed"]
    assert all(r["ms"] > 0 for r in rows.values()) and rows["dense"]["over_dense"] == 1.0
    bad = subprocess.run([*cmd[:2], "--rounds", "1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert bad.returncode == 2 and "--rounds must be at least 2" in bad.stderr


def test_onednn_profile_parses_the_verbose_lines() -> None:
    """examples/onednn_profile.py counts only the primitives executed between its markers, per
    step, keyed by primitive kind and implementation."""
    profile = _load_script("examples/onednn_profile.py", "ssm_onednn_profile")
    conv = "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,fwd,a,b,{}"
    lines = [
        conv.format(99.0),  # warm-up: not counted
        profile.START,
        conv.format(3.0),
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,a,b,0.5",
        "onednn_verbose,v1,primitive,create:cache_hit,cpu,reorder,jit:uni,undef,a,b,7.0",
        conv.format(5.0),
        "some other output",
        f"{profile.END} 0.25",
        conv.format(99.0),
    ]
    times, wall = profile.parse("\n".join(lines), steps=2)
    assert times == {"convolution (brg_conv_fwd:avx512_core)": 4.0, "reorder (jit:uni)": 0.25}
    assert wall == 250.0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="oneDNN is TensorFlow's")
def test_onednn_profile_runs_dense_and_masked() -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "onednn_profile.py"), "--model", "fcn"]
    cmd += ["--masks", "none", "signed", "--precision", "float32", "--steps", "1", "--batch", "8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| primitive (implementation) | none | signed |" in proc.stdout
    (wall,) = [line for line in proc.stdout.splitlines() if line.startswith("| wall, per step |")]
    assert all(float(cell) > 0 for cell in wall.strip("|").split("|")[1:])
    for flag, value, message in [("--model", "fcm", "--model 'fcm' is not"),
                                 ("--masks", "sgned", "--masks ['sgned'] unknown")]:  # fmt: skip
        bad = subprocess.run([*cmd[:2], flag, value], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-2000:]


@pytest.mark.parametrize("retrain", [False, True])
def test_dense_baseline_training_is_resumable(bench, tmp_path: Path, monkeypatch, retrain) -> None:
    """The dense baseline the harness trains backs up every epoch and continues after an
    interruption (resume=True); --retrain drops a leftover backup and starts over."""
    import argparse

    import keras_ssm

    signed, work = tmp_path / "signed", tmp_path / "work"
    signed.mkdir()
    (signed / "metrics.json").write_text(json.dumps({"model": "conv4"}))
    backup = work / "conv4_dense" / "backup"
    backup.mkdir(parents=True)  # an interrupted dense run
    calls = []
    monkeypatch.setattr(keras_ssm, "train", lambda *args, **kwargs: calls.append((args, kwargs)))
    a = argparse.Namespace(signed_run=signed, dense_run=None, structured_run=None,
                           retrain=retrain, no_tfmot=True, dense_epochs=50)  # fmt: skip
    dense, tfmot = bench._ensure_trained(a, work)
    assert dense == work / "conv4_dense" and tfmot is None
    ((args, kwargs),) = calls
    assert args == ("conv4",) and kwargs["resume"] is True and kwargs["epochs"] == 50
    assert kwargs["out"] == dense and kwargs["overwrite"] is retrain
    assert backup.exists() is not retrain


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the ONNX export converts through tf2onnx"
)
def test_frontier_times_every_run_against_the_dense_model(tmp_path: Path) -> None:
    """export/frontier.py exports each signed run and the random-weight dense model, counts each
    ONNX file's accuracy against its compact model, times them all in the same rounds and groups
    the seeds of a recipe."""
    from fixtures import write_mnist

    import keras_ssm

    frontier = _load_script("export/frontier.py", "ssm_frontier")
    data = write_mnist(tmp_path / "data")
    results = tmp_path / "results"
    runs = []
    for seed, penalty in ((1, None), (2, None), (1, 0.01)):
        tag = "default" if penalty is None else "up0.01"
        out = results / f"fcn_signed_{tag}_s{seed}"
        keras_ssm.train("fcn", "mnist", epochs=1, limit=256, seed=seed, unit_penalty=penalty,
                        data_dir=data, out=out, verbose=0, record_masks=False)  # fmt: skip
        runs.append(out)
    (results / "fcn_signed_other_s3").mkdir()  # no model.ssm yet: not a committed signed run
    assert frontier.signed_runs("fcn", results) == []  # training runs keep model.keras only
    (results / "fcn_signed_other_s3" / "model.ssm").write_bytes(b"")
    assert frontier.signed_runs("fcn", results) == [results / "fcn_signed_other_s3"]
    assert frontier.signed_runs("conv4", results) == []
    assert frontier.recipe_of(runs[2]) == "fcn_signed_up0.01"

    md = tmp_path / "frontier.md"
    argv = ["--model", "fcn", "--work-dir", str(tmp_path / "work"), "--results", str(md),
            "--data-dir", str(data), "--rounds", "2", "--runs", "3", "--warmup", "1",
            "--litert"]  # fmt: skip
    for run in runs:
        argv += ["--signed-run", str(run)]
    assert frontier.main(argv) == 0

    result = json.loads(md.with_suffix(".json").read_text())
    for key in ("latency_us", "latency_litert_us"):  # ONNX and (--litert) LiteRT files
        assert set(result[key]) == {frontier.DENSE, *(run.name for run in runs)}
        for cells in result[key].values():
            assert set(cells) == set(frontier.SETTINGS)
            assert all(v > 0 for per in cells.values() for v in per.values())
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    for run in runs:
        row = result["runs"][run.name]
        assert row["mismatches"] == 0 and row["units"] and len(row["units"]) == 2
        assert row["litert_mismatches"] == 0 and row["litert_accuracy"] == row["onnx_accuracy"]
        assert 0 < row["compact_bytes"] < row["int8_onnx_bytes"] < row["fp32_onnx_bytes"]
    assert result["runs"][runs[0].name]["remaining"] == metrics["remaining"]
    assert result["test_images"] == 128
    text = md.read_text()
    assert "| fcn_signed_default | 2 |" in text and "| fcn_signed_up0.01 | 1 |" in text
    assert " ± " in text and frontier.DENSE in text
    assert "the ONNX file and the LiteRT file agree on every image" in text
    assert "LiteRT: x faster b1 / b64, default" in text and "LiteRT b1 / b64 us, 1 thread" in text
    assert (tmp_path / "work" / runs[0].name / "model.tflite").is_file()
    assert (tmp_path / "work" / runs[2].name / "model_int8.onnx").is_file()
    # the README's frontier table reads the per-recipe rows the JSON keeps
    summary = _load_script("export/summary.py", "ssm_summary_frontier")
    table = summary.frontier_table([md.with_suffix(".json")])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert all(len(row) == len(summary.FRONTIER_COLUMNS) for row in cells)
    assert [row[:3] for row in cells] == [["FCN", "`fcn_signed_default`", "2"],
                                          ["FCN", "`fcn_signed_up0.01`", "1"]]  # fmt: skip
    assert " ± " in cells[0][3] and " ± " not in cells[1][3]  # mean ± sd over the 2 seeds
    speed = r"[\d.]+( ± [\d.]+)?x / [\d.]+( ± [\d.]+)?x"
    assert all(re.fullmatch(speed, row[8]) and re.fullmatch(speed, row[10]) for row in cells)
    # a page made without --litert: no LiteRT columns, "-" in the README's LiteRT column
    del result["latency_litert_us"]
    result["recipes"] = frontier.rows(result)[1]
    onnx_only = frontier.markdown(result)
    assert "LiteRT: x faster" not in onnx_only and "LiteRT b1" not in onnx_only
    (tmp_path / "onnx_only.json").write_text(json.dumps(result))
    table = summary.frontier_table([tmp_path / "onnx_only.json"])
    assert {line.split("|")[11].strip() for line in table.splitlines()[2:]} == {"-"}

    # a run of another architecture is named before anything is exported
    with pytest.raises(SystemExit):
        frontier.main(["--model", "conv2", "--signed-run", str(runs[0]), "--work-dir",
                       str(tmp_path / "w2"), "--results", str(tmp_path / "x.md")])  # fmt: skip
    assert not (tmp_path / "w2").exists() and not (tmp_path / "x.md").exists()


def test_wrap_example_results_page_is_generated_from_its_json() -> None:
    """examples/results/wrap_*/results.md is what examples/wrap_cifar10.py makes of the
    results.json beside it (every number on the page comes from the measured file), and the
    page holds the dense, signed and structure-aware models with every file measured."""
    wrap = _load_script("examples/wrap_cifar10.py", "ssm_wrap_cifar10")
    pages = sorted((ROOT / "examples" / "results").glob("wrap_*/results.json"))
    assert pages
    for path in pages:
        report = json.loads(path.read_text())
        assert (path.parent / "results.md").read_text() == wrap.markdown(report)
        names = list(report["variants"])
        assert names[0] == "dense" and any("_up" in n for n in names), names
        for variant, entry in report["variants"].items():
            for name in ("model.onnx", "model.tflite"):
                assert entry["files"][name]["accuracy"] == entry["keras_accuracy"], (variant, name)
                for batch in (1, 64):
                    assert report["latency"][f"{variant}/{name}@{batch}"]["median_us"] > 0
