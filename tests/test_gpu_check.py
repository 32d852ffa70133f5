"""The accelerator check (``experiments.benchmarks.gpu_check``): its dry run end to end on CPU,
and the pieces that decide labels, peaks, output folders and the scatter-add recommendation."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments.benchmarks import gpu_check

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION_KEYS = {
    "sampler": {"problems", "impls", "goals"},
    "scatter_add": {"settings", "recommendation", "failed_settings"},
    "training": {"batch_size", "params", "images_per_s_median", "vs_torch", "scaling", "compile_s"},
    "convergence": {"recipe", "steps", "test_error", "test_error_pct", "images_per_s", "data", "curve"},
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.gpu_check", "--dry-run", "--out", str(out),
                           "--peak-gbs", "10"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_dry_run_writes_every_section(dry_run):
    result, _ = dry_run
    assert set(result) == {"machine", "meta", *gpu_check.SECTIONS}
    assert result["meta"]["dry_run"] is True
    assert result["meta"]["device"]["platform"] == "cpu"
    assert result["machine"].startswith("cpu-")
    for section, keys in SECTION_KEYS.items():
        assert result[section]["status"] == "ok", result[section]
        assert keys <= set(result[section]), (section, keys - set(result[section]))
        assert result[section]["elapsed_s"] >= 0


def test_dry_run_sampler(dry_run):
    sampler = dry_run[0]["sampler"]
    assert [p["dtype"] for p in sampler["problems"].values()] == [d for _, _, d in gpu_check.DRY.sampler]
    for problem in sampler["problems"].values():
        assert problem["status"] == "ok"
        assert set(problem["candidates"]) == {problem["torch"], "grid_sample[auto]", "warp[auto]"}
        for row in problem["candidates"].values():
            for kind in ("fwd", "fwd+bwd"):
                assert row[kind]["median_ms"] > 0 and row[kind]["GBps"] > 0
                assert row[kind]["peak_fraction"] == pytest.approx(row[kind]["GBps"] / 10)
    assert len(sampler["goals"]) == 2 * len(sampler["problems"])


def test_dry_run_scatter_add(dry_run):
    scatter = dry_run[0]["scatter_add"]
    assert list(scatter["settings"]) == list(gpu_check.SCATTER_SETTINGS)
    for name, setting in scatter["settings"].items():
        assert setting["status"] == "ok", setting
        assert gpu_check.SCATTER_SETTINGS[name] in setting["XLA_FLAGS"]
        for problem in setting["problems"].values():
            assert {"warp", "warp[generic]", "axis_aligned_warp"} <= set(problem["times"])
            assert problem["candidate_errors"] == {}
    assert "torch" in scatter["settings"]["default"]["problems"]["2x16x16x3 many-to-one"]["times"]
    rec = scatter["recommendation"]
    assert rec["platform"] == "cpu" and rec["gpu_kernel"] in ("window", "generic")
    assert set(rec["ratios"]) >= {"ftz_speedup", "deterministic_ops_speedup", "axis_aligned_speedup"}


def test_dry_run_training_and_convergence(dry_run):
    result, markdown = dry_run
    training = result["training"]
    assert set(training["images_per_s_median"]) == {"jax_engine[1]", "jax_engine[2]", "jax_step", "torch_step"}
    assert training["scaling"]["devices"] == 2 and training["scaling"]["speedup"] > 0
    conv = result["convergence"]
    assert conv["recipe_options"]["optimizer"] == "adam"
    assert gpu_check.DRY.converge_steps[0] <= conv["steps"] <= gpu_check.DRY.converge_steps[1]
    assert 0.0 <= conv["test_error"] <= 1.0 and conv["data"]["is_sample"]
    assert [r["split"] for r in conv["curve"]][-1] == "test"
    for heading in ("## 1. Sampler", "## 2. Scatter-add", "## 3. Training", "## 4. Convergence", "Recommendation"):
        assert heading in markdown


def test_markdown_shows_failures_and_skips(dry_run):
    result = copy.deepcopy(dry_run[0])
    label = next(iter(result["sampler"]["problems"]))
    result["sampler"]["problems"][label] = {"status": "error", "error": "AssertionError: ('auto', 0.5)"}
    result["sampler"].update(status="error", error=f"problem(s) ['{label}'] failed; see problems")
    settings = result["scatter_add"]["settings"]
    settings["ftz_atomics"] = {"status": "error", "flag": "-nvptx-allow-ftz-atomics", "error": "LLVM ERROR: unknown"}
    first = next(iter(settings["default"]["problems"]))
    settings["default"]["problems"][first] = {"status": "skipped", "reason": "budget spent", "kind": "many"}
    result["training"] = {"status": "error", "error": "RuntimeError: cuDNN version", "elapsed_s": 1.0}
    result["convergence"] = {"status": "skipped", "reason": "not selected"}
    markdown = gpu_check.to_markdown(result)
    for text in ("AssertionError", "LLVM ERROR", "budget spent", "**sampler failed:**", "**training failed:**",
                 "convergence skipped"):
        assert text in markdown, text
    assert "## 3. Training" not in markdown and "## 4. Convergence" not in markdown


def test_dry_run_never_writes_into_results():
    args = gpu_check.parse_args(["--dry-run", "--out", str(ROOT / "experiments" / "results" / "x")])
    with pytest.raises(SystemExit, match="never writes under experiments/results"):
        gpu_check.output_dir(args, "cpu-2core-x86_64")
    default = gpu_check.output_dir(gpu_check.parse_args(["--dry-run"]), "cpu-2core-x86_64")
    assert default == (ROOT / gpu_check.DRY_RUN_OUT).resolve()
    real = gpu_check.output_dir(gpu_check.parse_args([]), "gpu-1xh200-x86_64")
    assert real == (ROOT / "experiments" / "results" / "gpu-1xh200-x86_64").resolve()


@pytest.mark.parametrize("kind, gbs", [
    ("NVIDIA H200", 4800), ("NVIDIA GH200 480GB", 4000), ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000),
    ("NVIDIA A100-SXM4-40GB", 1555), ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA L4", 300), ("NVIDIA L40S", 864),
    ("Tesla T4", 320), ("TPU v4", 1200), ("TPU v5 lite", 819), ("TPU v5p", 2765), ("cpu", None)])
def test_peak_bandwidth(kind, gbs):
    assert gpu_check.peak_bandwidth(kind, None)[0] == gbs
    assert gpu_check.peak_bandwidth(kind, 123.0) == (123.0, "--peak-gbs")


def test_machine_label():
    assert gpu_check.machine_label("gpu", "NVIDIA H200", 1, arch="x86_64") == "gpu-1xh200-x86_64"
    assert gpu_check.machine_label("gpu", "NVIDIA A100-SXM4-40GB", 8, arch="x86_64") == "gpu-8xa100-sxm4-40gb-x86_64"
    assert gpu_check.machine_label("tpu", "TPU v5 lite", 4, arch="x86_64") == "tpu-4xv5-lite-x86_64"
    assert gpu_check.machine_label("cpu", "cpu", 1, cpu_count=2, arch="x86_64") == "cpu-2core-x86_64"


def test_portable_argv():
    argv = ["--out", str(ROOT / "build" / "x"), f"--data-dir={ROOT.parent / 'data'}", "--dry-run"]
    assert gpu_check.portable_argv(argv) == ["--out", os.path.join("build", "x"), "--data-dir=../data", "--dry-run"]


def _setting(times: dict[str, float]) -> dict:
    problem = {"status": "ok", "kind": "many", "times": {k: {"median_ms": v} for k, v in times.items()}}
    return {"status": "ok", "device": {"platform": "gpu"}, "problems": {"p": problem}}


def test_recommendation_follows_the_times():
    slow_scatter = {"default": _setting({"warp": 10.0, "warp[generic]": 8.0, "axis_aligned_warp": 4.0}),
                    "ftz": _setting({"warp": 2.0}), "ftz_atomics": _setting({"warp": 2.5}),
                    "deterministic": _setting({"warp": 20.0})}
    rec = gpu_check.recommend(slow_scatter)
    assert rec["xla_flags"] == "--xla_gpu_ftz=true"
    assert rec["gpu_kernel"] == "generic" and rec["axis_aligned"] == "separable"
    assert rec["ratios"]["ftz_speedup"] == pytest.approx(5.0)
    assert rec["ratios"]["deterministic_ops_speedup"] == pytest.approx(0.5)
    assert rec["library_change"] == ("stn_jax/_src/dispatch.py: GPU_KERNEL = 'generic'; "
                                     "GPU_MAX_DENSE_MACS_PER_OUTPUT = MAX_DENSE_MACS_PER_OUTPUT (448)")
    fine = {"default": _setting({"warp": 1.0, "warp[generic]": 1.5, "axis_aligned_warp": 1.2}),
            "ftz": _setting({"warp": 0.9})}
    rec = gpu_check.recommend(fine)
    assert (rec["xla_flags"], rec["gpu_kernel"], rec["axis_aligned"]) == ("", "window", "gather")
    assert rec["library_change"].endswith("GPU_KERNEL = 'window'; GPU_MAX_DENSE_MACS_PER_OUTPUT = 0")
    assert rec["ratios"]["ftz_atomics_speedup"] is None
    assert "no recommendation" in gpu_check.recommend({"default": {"status": "error"}})["summary"]


def test_dispatch_takes_the_named_gpu_choices_on_a_gpu(monkeypatch):
    """The recommendation's ``library_change`` names these constants; on a GPU they decide."""
    import stn_jax
    from stn_jax._src import dispatch

    assert dispatch.choose_kernel("bilinear", 2, batch=4, points_per_example=100) == ("window", 1)
    monkeypatch.setattr(dispatch, "on_gpu", lambda: True)
    assert dispatch.choose_kernel("bilinear", 2, batch=4096, points_per_example=4096) == (dispatch.GPU_KERNEL, 1)
    monkeypatch.setattr(dispatch, "GPU_KERNEL", "generic")
    assert dispatch.choose_kernel("bilinear", 2, batch=4, points_per_example=100) == ("generic", 1)
    with stn_jax.sampler_implementation("fast"):
        assert dispatch.choose_kernel("bilinear", 2, batch=4, points_per_example=100) == ("window", 1)
    assert dispatch.prefer_separable((28, 28), (28, 28))
    monkeypatch.setattr(dispatch, "GPU_MAX_DENSE_MACS_PER_OUTPUT", 0)
    assert not dispatch.prefer_separable((28, 28), (28, 28))
    monkeypatch.setattr(dispatch, "on_gpu", lambda: False)
    assert dispatch.prefer_separable((28, 28), (28, 28))
