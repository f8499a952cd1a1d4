"""Smoke test of the benchmark script: a `--quick` run prints one well-formed JSON object."""

import json
import os
import subprocess
import sys

BLOCKS = ("suite", "keras_hub", "keras_mha")


def test_bench_backbone_quick_prints_one_json_object(repo_root):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "bench_backbone.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)

    assert set(result) >= {"machine", "config", "flops", "matmul", "blocks", "suite_speedup", "max_abs_diff_vs_suite"}
    assert set(result["machine"]) >= {"cpu_model", "cpu_cores", "tensorflow", "keras", "keras_hub", "date"}
    assert result["config"]["quick"] is True
    assert result["flops"]["train_step"] == 3 * result["flops"]["forward"] > 0
    assert result["matmul_peak_gflops_per_s"] > 0
    assert set(result["blocks"]) == set(BLOCKS)
    parameters = {result["blocks"][name]["parameters"] for name in BLOCKS}
    assert len(parameters) == 1, "the three blocks should have the same number of weights"
    for name in BLOCKS:
        for mode in ("train", "inference"):
            figures = result["blocks"][name][mode]
            assert figures["tokens_per_s"] > 0 and figures["gflops_per_s"] > 0
            assert figures["cpu_seconds_median"] > 0 and figures["fraction_of_matmul_peak_cpu"] > 0
            assert figures["seconds_min"] <= figures["seconds_median"] <= figures["seconds_max"]
    assert set(result["suite_speedup"]) == {"train_wall", "train_cpu", "inference_wall", "inference_cpu"}
    for peer, difference in result["max_abs_diff_vs_suite"].items():
        assert difference < 1e-4, f"{peer} given our weights should compute the same block"
