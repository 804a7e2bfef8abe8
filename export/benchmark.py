"""Deployment benchmark: dense FCN vs TF-MOT magnitude pruning vs signed supermask, on MNIST.

Builds and measures side by side, in one run:

1. the dense baseline (``ssm train --model fcn --mask none --jit``: the paper's baseline recipe,
   50 epochs), exported with ``ssm export`` (ONNX, LiteRT, .ssm);
2. TF-MOT ``prune_low_magnitude`` + ``strip_pruning`` of the same FCN, trained to the signed
   run's per-layer sparsity with the signed run's epoch budget (``export/tfmot_baseline.py``, in
   its own process: tf_keras), exported to ONNX (tf2onnx) and TFLite (sparse storage);
3. the signed supermask run: folded, shrunk, ONNX fp32, exact-int8 ONNX, LiteRT and .ssm
   (``ssm export --shrink --int8``), plus the unshrunk fold and two ONNX graph rewrites
   (``export/variants.py``): input-pixel ``Gather`` and onnxruntime's contrib
   ``SparseToDenseMatMul``.

Every artifact's test accuracy is measured ON THE ARTIFACT (onnxruntime, LiteRT, the .ssm
reloaded in Keras); latencies are interleaved in rounds so that load from other processes hits
every model alike. Writes ``--results`` (default ``export/RESULTS.md``) and the same name
with ``.json``.

    python export/benchmark.py --signed-run runs/sweep/fcn_wd1.5e-4_s7531

Trained baselines in ``--work-dir`` are reused when present (``--retrain`` retrains them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from variants import gather_inputs, sparse_feeds, sparse_matmul  # noqa: E402


def _run(cmd: list[str], log: Path | None = None) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True, cwd=ROOT)
        return
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}); see {log}")


def _export(run: Path, out_dir: Path, formats: str, **options: Any) -> None:
    """``keras_ssm.export.export_run`` into ``out_dir`` (replacing what is there)."""
    from keras_ssm.export import export_run

    export_run(run, formats, out_dir=out_dir, overwrite=True, progress=print, **options)


def _ensure_trained(a: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    dense, tfmot = work / "fcn_dense", work / "fcn_tfmot"
    if a.retrain or not (dense / "metrics.json").is_file():
        import keras_ssm

        print(f"$ keras_ssm.train('fcn', mask=None, epochs={a.dense_epochs}, out={dense})")
        keras_ssm.train(
            "fcn", mask=None, epochs=a.dense_epochs, out=dense, overwrite=a.retrain, verbose=2
        )
    if a.retrain or not (tfmot / "metrics.json").is_file():
        cmd = [
            sys.executable,
            str(HERE / "tfmot_baseline.py"),
            "--signed-run",
            str(a.signed_run),
            "--out",
            str(tfmot),
        ]
        if a.tfmot_epochs:
            cmd += ["--epochs", str(a.tfmot_epochs)]
        if a.retrain:
            cmd.append("--force")
        _run(cmd, work / "fcn_tfmot.log")
    return dense, tfmot


class Artifact:
    """One file (or graph variant) to measure."""

    def __init__(
        self,
        group: str,
        label: str,
        path: Path,
        runtime: str,
        sparse: dict | None = None,
        note: str = "",
    ) -> None:
        self.group, self.label, self.path, self.runtime = group, label, path, runtime
        self.sparse = sparse
        self.note = note
        self.result: dict[str, Any] = {}


def _session(path: Path, threads: int) -> Any:
    from keras_ssm.export.runtime import ort_session

    return ort_session(path, threads=threads)


def _runner(art: Artifact, x: np.ndarray, threads: int) -> Any:
    """A zero-argument function running ``art`` on ``x`` and returning the scores."""
    from keras_ssm.export.runtime import litert_interpreter, litert_run

    if art.runtime == "litert":
        interp = litert_interpreter(art.path, threads)
        litert_run(interp, x)
        (inp,) = interp.get_input_details()
        out = interp.get_output_details()[0]["index"]

        def run_litert() -> np.ndarray:
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            return interp.get_tensor(out)

        return run_litert
    sess = _session(art.path, threads)
    name = sess.get_inputs()[0].name
    if art.sparse is not None:
        import onnxruntime as ort

        feeds = {**sparse_feeds(art.sparse), name: ort.OrtValue.ortvalue_from_numpy(x)}
        outs = [sess.get_outputs()[0].name]
        return lambda: sess.run_with_ort_values(outs, feeds)[0].numpy()
    feed = {name: x}
    return lambda: sess.run(None, feed)[0]


def _scores(art: Artifact, x: np.ndarray, threads: int) -> np.ndarray:
    from keras_ssm.export import load_compact
    from keras_ssm.export.runtime import keras_scores

    if art.runtime == "keras":
        return keras_scores(load_compact(art.path), x)
    parts = []
    for i in range(0, len(x), 500):
        parts.append(np.array(_runner(art, np.ascontiguousarray(x[i : i + 500]), threads)()))
    return np.concatenate(parts)


def _profile(path: Path, x: np.ndarray, threads: int, runs: int = 200) -> dict[str, float]:
    """onnxruntime's profiler: mean microseconds per run spent in each operator type."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    opts.enable_profiling = True
    opts.profile_file_prefix = "/tmp/ssm_bench_profile"
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs):
        sess.run(None, feed)
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    per_op: dict[str, float] = {}
    total = 0.0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / runs
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            total += e["dur"] / runs
    per_op = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
    per_op["(whole run)"] = total
    return {k: round(v, 2) for k, v in per_op.items()}


def main(argv: list[str] | None = None) -> int:
    """Train what is missing, export, measure, write RESULTS.md; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--signed-run",
        required=True,
        type=Path,
        help="finished signed FCN run folder (model.keras, metrics.json)",
    )
    p.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--dense-epochs", type=int, default=50)
    p.add_argument("--tfmot-epochs", type=int, help="default: the signed run's epochs")
    p.add_argument("--retrain", action="store_true", help="retrain the dense and TF-MOT runs")
    p.add_argument("--runs", type=int, default=40, help="timed runs per round")
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds (runs x rounds timings per median)",
    )
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    a = p.parse_args(argv)
    if a.runs * a.rounds < 50:
        p.error("--runs x --rounds must be at least 50")
    command = "python export/benchmark.py " + " ".join(
        shlex.quote(x) for x in (argv or sys.argv[1:])
    )
    work = a.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dense_run, tfmot_run = _ensure_trained(a, work)

    import keras

    import keras_ssm
    from keras_ssm.export import atomic_write_bytes, load_test_set
    from keras_ssm.export.runtime import file_sizes, keras_scores, summarize, thread_settings

    signed_metrics = json.loads((a.signed_run / "metrics.json").read_text())
    dense_metrics = json.loads((dense_run / "metrics.json").read_text())
    tfmot_metrics = json.loads((tfmot_run / "metrics.json").read_text())
    exp = {k: work / f"{k}_export" for k in ("dense", "signed", "signed_noshrink")}
    print("== exporting", flush=True)
    _export(dense_run, exp["dense"], "onnx,litert,compact")
    _export(a.signed_run, exp["signed"], "onnx,litert,compact", shrink=True, int8=True)
    _export(a.signed_run, exp["signed_noshrink"], "onnx")

    import onnx

    base = onnx.load(str(exp["signed"] / "model.onnx"))
    gathered, ginfo = gather_inputs(base)
    gpath = work / "signed_gather.onnx"
    atomic_write_bytes(gpath, gathered.SerializeToString(), overwrite=True)
    sparse_model, sparse_w = sparse_matmul(base)
    spath = work / "signed_sparse_matmul.onnx"
    atomic_write_bytes(spath, sparse_model.SerializeToString(), overwrite=True)

    arts = [
        Artifact("dense", "dense ONNX fp32", exp["dense"] / "model.onnx", "onnxruntime"),
        Artifact("dense", "dense LiteRT", exp["dense"] / "model.tflite", "litert"),
        Artifact("tfmot", "TF-MOT pruned ONNX fp32", tfmot_run / "model.onnx", "onnxruntime"),
        Artifact("tfmot", "TF-MOT pruned LiteRT (sparse)", tfmot_run / "model.tflite", "litert"),
        Artifact(
            "signed",
            "signed fold, no shrink, ONNX fp32",
            exp["signed_noshrink"] / "model.onnx",
            "onnxruntime",
        ),
        Artifact(
            "signed", "signed fold+shrink ONNX fp32", exp["signed"] / "model.onnx", "onnxruntime"
        ),
        Artifact(
            "signed",
            "signed fold+shrink ONNX int8 (exact)",
            exp["signed"] / "model_int8.onnx",
            "onnxruntime",
        ),
        Artifact(
            "signed",
            "signed fold+shrink ONNX + input Gather",
            gpath,
            "onnxruntime",
            note=f"{ginfo.get('features_after')}/{ginfo.get('features_before')} pixels",
        ),
        Artifact(
            "signed",
            "signed fold+shrink ONNX SparseToDenseMatMul",
            spath,
            "onnxruntime",
            sparse=sparse_w,
            note="weights fed as sparse_tensor inputs",
        ),
        Artifact(
            "signed", "signed fold+shrink LiteRT (sparse)", exp["signed"] / "model.tflite", "litert"
        ),
        Artifact("signed", "signed compact .ssm", exp["signed"] / "model.ssm", "keras"),
    ]

    print("== accuracy on the exported artifacts", flush=True)
    x, y = load_test_set(signed_metrics.get("dataset", "mnist"))
    # The float32 models (what was exported), whatever precision the runs trained in.
    signed_model = keras_ssm.wrap.to_float32(keras.saving.load_model(a.signed_run / "model.keras"))
    dense_model = keras_ssm.wrap.to_float32(keras.saving.load_model(dense_run / "model.keras"))
    keras_acc = {
        "signed": float(np.mean(np.argmax(keras_scores(signed_model, x), -1) == y)),
        "dense": float(np.mean(np.argmax(keras_scores(dense_model, x), -1) == y)),
        "tfmot": float(tfmot_metrics["test_accuracy"]),
    }
    for art in arts:
        scores = _scores(art, x, a.threads)
        art.result["accuracy"] = float(np.mean(np.argmax(scores, -1) == y))
        art.result.update(
            file_sizes(art.path) if art.sparse is None else {"bytes": None, "gzip_bytes": None}
        )
        print(
            f"  {art.label:<48} accuracy {art.result['accuracy']:.4f} "
            f"(keras {keras_acc[art.group]:.4f})",
            flush=True,
        )

    print("== latency (interleaved rounds)", flush=True)
    load_before = os.getloadavg()
    timed = [art for art in arts if art.runtime != "keras"]
    times: dict[tuple[int, int], list[float]] = {}
    for r in range(a.rounds):
        for b in (1, 64):
            xb = np.ascontiguousarray(x[:b])
            for i, art in enumerate(timed):
                fn = _runner(art, xb, a.threads)
                for _ in range(a.warmup):
                    fn()
                ts = times.setdefault((i, b), [])
                for _ in range(a.runs):
                    t0 = time.perf_counter_ns()
                    fn()
                    ts.append((time.perf_counter_ns() - t0) / 1e3)
        print(f"  round {r + 1}/{a.rounds} done", flush=True)
    for (i, b), ts in sorted(times.items()):
        timed[i].result[f"batch{b}"] = summarize(ts)
    ref = {b: timed[0].result[f"batch{b}"]["median_us"] for b in (1, 64)}  # dense ONNX
    for art in timed:
        for b in (1, 64):
            s = art.result[f"batch{b}"]
            s["speedup_vs_dense_onnx"] = round(ref[b] / s["median_us"], 2)

    load_after = os.getloadavg()
    print("== where the time goes (onnxruntime profiler, batch 64)", flush=True)
    x64 = np.ascontiguousarray(x[:64])
    profiles = {
        art.label: _profile(art.path, x64, a.threads)
        for art in timed
        if art.runtime == "onnxruntime" and art.sparse is None
    }

    dense_bytes = arts[0].result["bytes"]
    dense_gz = arts[0].result["gzip_bytes"]
    results = {
        "command": command,
        "signed_run": str(a.signed_run),
        "dense_run": str(dense_run),
        "tfmot_run": str(tfmot_run),
        "keras_accuracy": keras_acc,
        "signed_remaining": signed_metrics.get("remaining"),
        "tfmot_remaining": tfmot_metrics.get("remaining"),
        "dense_epochs": dense_metrics.get("epochs"),
        "signed_epochs": signed_metrics.get("epochs"),
        "tfmot_epochs": tfmot_metrics.get("epochs"),
        "threads": {
            **thread_settings(a.threads),
            "load_average": {"before": load_before, "after": load_after},
        },
        "timed_runs_per_median": a.runs * a.rounds,
        "warmup_per_round": a.warmup,
        "test_images": int(len(y)),
        "artifacts": [
            {
                "group": t.group,
                "label": t.label,
                "path": str(t.path),
                "runtime": t.runtime,
                "note": t.note,
                **t.result,
            }
            for t in arts
        ],
        "profiles_batch64_us": profiles,
        "gather": ginfo,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    for art in arts:
        if art.result.get("bytes"):
            art.result["smaller_than_dense_onnx"] = round(dense_bytes / art.result["bytes"], 1)
            art.result["smaller_gz"] = round(dense_gz / art.result["gzip_bytes"], 1)
    json_path = a.results.with_suffix(".json")
    a.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        json_path,
        (json.dumps(results, indent=2, default=str) + "\n").encode(),
        overwrite=True,
    )
    text = _markdown(results, arts, keras_acc, ref)
    atomic_write_bytes(a.results, text.encode("utf-8"), overwrite=True)
    print(text)
    print(f"wrote {a.results} and {json_path}")
    return 0


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _markdown(
    res: dict[str, Any], arts: list[Artifact], keras_acc: dict[str, float], ref: dict[int, float]
) -> str:
    th = res["threads"]
    lines = [
        "# Export benchmark: FCN on MNIST (dense vs TF-MOT pruning vs signed supermask)",
        "",
        "Produced by:",
        "",
        "```bash",
        "KERAS_SSM_DATA_DIR=/work/shared/datasets .venv/bin/" + res["command"],
        "```",
        "",
        f"- signed run: `{res['signed_run']}` ({res['signed_epochs']} epochs, remaining "
        f"{res['signed_remaining']:.4%}); dense: `{res['dense_run']}` ({res['dense_epochs']} "
        f"epochs); TF-MOT: `{res['tfmot_run']}` ({res['tfmot_epochs']} epochs, remaining "
        f"{res['tfmot_remaining']:.4%}, same per-layer sparsity as the signed run)",
        f"- Keras accuracy (10,000 test images): signed {keras_acc['signed']:.4f}, dense "
        f"{keras_acc['dense']:.4f}, TF-MOT (tf_keras) {keras_acc['tfmot']:.4f}",
        f"- latency: median of {res['timed_runs_per_median']} timed runs ({len(ref)} batch "
        f"sizes), measured in interleaved rounds after {res['warmup_per_round']} warm-up runs "
        "per round; onnxruntime intra_op_num_threads="
        f"{th['onnxruntime']['intra_op_num_threads']}, inter_op_num_threads="
        f"{th['onnxruntime']['inter_op_num_threads']}, ORT_SEQUENTIAL, "
        "session.disable_quant_qdq=1 (exact int8); LiteRT num_threads="
        f"{th['litert']['num_threads']} (XNNPACK); {th['cpu_count']} CPU cores; 1-minute load "
        f"average {th['load_average']['before'][0]:.2f} before and "
        f"{th['load_average']['after'][0]:.2f} after the latency rounds (other jobs shared "
        "the machine)",
        "- ratios are against the dense fp32 ONNX file of the same run (size) and its "
        "onnxruntime latency (speed)",
        "",
        "| artifact | runtime | accuracy | bytes | gzip bytes | x smaller (raw / gzip) | "
        "batch 1 us | batch 64 us | x faster b1 / b64 | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for art in arts:
        r = art.result
        b1, b64 = r.get("batch1"), r.get("batch64")
        lat1 = f"{b1['median_us']:.1f}" if b1 else "-"
        lat64 = f"{b64['median_us']:.1f}" if b64 else "-"
        sp = (
            f"{b1['speedup_vs_dense_onnx']:.2f} / {b64['speedup_vs_dense_onnx']:.2f}" if b1 else "-"
        )
        small = (
            f"{r['smaller_than_dense_onnx']:.1f} / {r['smaller_gz']:.1f}" if r.get("bytes") else "-"
        )
        lines.append(
            f"| {art.label} | {art.runtime} | {r['accuracy']:.4f} | "
            f"{_fmt_bytes(r.get('bytes'))} | {_fmt_bytes(r.get('gzip_bytes'))} | "
            f"{small} | {lat1} | {lat64} | {sp} | {art.note} |"
        )
    lines += ["", "## Targets (signed artifacts against the dense fp32 ONNX file)", ""]
    by = {art.label: art.result for art in arts}
    signed = [art for art in arts if art.group == "signed"]
    onnx_best = max(
        (by[a.label] for a in signed if a.path.suffix == ".onnx" and a.sparse is None),
        key=lambda r: r["smaller_than_dense_onnx"],
    )
    lite = by["signed fold+shrink LiteRT (sparse)"]
    fastest = max(
        (a for a in signed if a.runtime == "onnxruntime"),
        key=lambda a: a.result["batch64"]["speedup_vs_dense_onnx"],
    )
    checks = [
        ("compact .ssm >= 100x smaller", by["signed compact .ssm"]["smaller_than_dense_onnx"], 100),
        ("ONNX file >= 10x smaller (int8)", onnx_best["smaller_than_dense_onnx"], 10),
        ("LiteRT file >= 10x smaller", lite["smaller_than_dense_onnx"], 10),
        (
            f"onnxruntime batch 64 >= 2x faster ({fastest.label})",
            fastest.result["batch64"]["speedup_vs_dense_onnx"],
            2,
        ),
    ]
    for what, got, want in checks:
        lines.append(f"- {what}: {got:.2f}x -> {'met' if got >= want else 'NOT met'}")
    n = res["test_images"]  # tf_keras reports float32 accuracy: compare correct counts
    same = all(round(art.result["accuracy"] * n) == round(keras_acc[art.group] * n) for art in arts)
    lines.append(f"- every artifact's accuracy equals its Keras model's: {'yes' if same else 'NO'}")
    lines += ["", "## Where the time goes (onnxruntime profiler, batch 64, mean us per run)", ""]
    for label, prof in res["profiles_batch64_us"].items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in prof.items())
        lines.append(f"- {label}: {parts}")
    lines += [
        "",
        "The profiler adds its own overhead (its per-run totals are larger than the timed "
        "medians); compare operators within a row. onnxruntime folds the exact int8 weights "
        "(int8 codes, Cast, Mul by the layer's scale) into float initializers at load time, "
        "under default session options, so the int8 file is smaller but runs the same float "
        "MatMuls; the speed comes from shrinking (fewer units, smaller dense MatMuls) and "
        "cropping the unread input border.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
