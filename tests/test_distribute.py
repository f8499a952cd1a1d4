"""Scale-out with tf.distribute: mirrored and multi-worker training end with the weights of
single-device training on the same global batches; strategy names are checked.

Each training runs in a subprocess: logical devices and the multi-worker cluster must be
configured before TensorFlow initialises. The forecaster's training windows have one shape and
its last partial batch is dropped, so every global batch splits evenly across two replicas.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from suite.cli import main
from suite.config import ConfigError
from suite.distribute import make_strategy
from suite.tasks import Forecaster

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "forecasting" / "sample.csv"
ROWS = 500  # split 0.7/0.1/0.2: 291 training windows, 9 full global batches of 32 (training drops the rest)
TINY = {
    "lookback": 48,
    "horizon": 12,
    "patch_length": 8,
    "patch_stride": 8,
    "data.split": [0.7, 0.1, 0.2],
    "backbone.num_layers": 1,
    "backbone.d_model": 16,
    "backbone.num_heads": 2,
    "backbone.ff_dim": 32,
    "backbone.dropout": 0.0,
    "backbone.max_length": 16,
    "head_dropout": 0.0,
    "training.batch_size": 32,
    "training.learning_rate": 3e-3,
    "training.epochs": 1,
}

# argv: logical CPU devices, strategy, output folder, overrides (JSON), data file, rows.
# Trains, saves the weights to <output>/weights.npz and prints a JSON report.
TRAIN = """
import json, sys
import numpy as np, pandas as pd, tensorflow as tf
devices, strategy, output, overrides, data, rows = sys.argv[1:]
if int(devices) > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(devices))
from suite.tasks import Forecaster
frame = pd.read_csv(data).iloc[: int(rows)]
task = Forecaster.train(frame, verbose=0, **json.loads(overrides), **{"training.strategy": strategy})
np.savez(f"{output}/weights.npz", *task.model.get_weights())
print(json.dumps({"class": type(task.strategy).__name__, "replicas": task.strategy.num_replicas_in_sync,
                  "jit_compile": task.model.jit_compile, "loss": task.training_metrics["history"]["loss"]}))
"""


class Training:
    """A training subprocess, started at once; `report()` waits for it and returns its report."""

    def __init__(self, output: pathlib.Path, devices: int, strategy: str, tf_config: dict | None = None):
        self.output = output
        output.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
        argv = [sys.executable, "-c", TRAIN, str(devices), strategy, str(output), json.dumps(TINY), str(SAMPLE), str(ROWS)]
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._report = None

    def report(self, timeout: float = 300) -> dict:
        if self._report is None:
            try:
                stdout, stderr = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
            assert self.process.returncode == 0, stderr[-4000:]
            self._report = json.loads(stdout.strip().splitlines()[-1])
        return self._report

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """The reference: the same training on one device under the default strategy (XLA steps),
    running beside the test that first asks for it."""
    training = Training(tmp_path_factory.mktemp("single"), 1, "default")
    yield training
    training.stop()


@pytest.fixture
def start():
    """`Training(...)`, stopped after the test (a worker left alone would wait for its peer)."""
    started = []

    def start_training(*args) -> Training:
        started.append(Training(*args))
        return started[-1]

    yield start_training
    for training in started:
        training.stop()


def _weights(path: pathlib.Path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _assert_same_weights(reference: Training, other: Training):
    """Equal up to float32 rounding: two half-batch gradients are summed where one device takes
    one full-batch mean. Most weights agree to ~1e-7; the attention key bias, whose gradient is
    zero in exact arithmetic, differs most (~1e-5 after 9 steps: Adam rescales its noise)."""
    expected, actual = _weights(reference.output / "weights.npz"), _weights(other.output / "weights.npz")
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5, err_msg=f"weight {i}")


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("localhost", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def test_mirrored_over_two_devices_matches_single_device_training(tmp_path, single_device, start):
    mirrored = start(tmp_path, 2, "mirrored")
    report, reference = mirrored.report(), single_device.report()
    assert (report["class"], report["replicas"], report["jit_compile"]) == ("MirroredStrategy", 2, False)
    assert (reference["replicas"], reference["jit_compile"]) == (1, True)
    np.testing.assert_allclose(report["loss"], reference["loss"], rtol=1e-5)
    _assert_same_weights(single_device, mirrored)


def test_two_workers_match_single_device_training_and_each_other(tmp_path, single_device, start):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = [
        start(tmp_path / f"worker{i}", 1, "multi_worker", {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]
    reference = single_device.report()
    for worker in workers:
        report = worker.report()
        assert (report["class"], report["replicas"], report["jit_compile"]) == ("CollectiveAllReduceStrategy", 2, False)
        np.testing.assert_allclose(report["loss"], reference["loss"], rtol=1e-5)
    for first, second in zip(_weights(workers[0].output / "weights.npz"), _weights(workers[1].output / "weights.npz")):
        np.testing.assert_array_equal(first, second)  # both apply the same all-reduced updates
    _assert_same_weights(single_device, workers[0])


def test_strategy_names_are_checked(monkeypatch, capsys):
    expected = r"strategy must be one of \['default', 'mirrored', 'multi_worker', 'tpu'\], got 'bogus'"
    with pytest.raises(ConfigError, match=expected):
        Forecaster.resolve_config(None, {"strategy": "bogus"})
    assert main(["train", "forecasting", "--strategy", "bogus"]) == 2
    assert "strategy must be one of" in capsys.readouterr().err
    with pytest.raises(ValueError, match=expected):
        make_strategy("bogus")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable, which is not set"):
        make_strategy("multi_worker")
    for variable in ("TPU_NAME", "TPU_CONFIG", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match="training.strategy 'tpu': no TPU could be reached"):
        make_strategy("tpu")
