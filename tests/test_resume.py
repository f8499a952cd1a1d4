"""Crash-safe training: a run killed with SIGKILL mid-epoch resumes to the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from suite.tasks import TextClassifier
from suite.core.checkpoint import CheckpointEvery, RunCheckpoint, TrainingProgress

SAMPLE = Path("data/text_classification")
TINY = [
    "--data.train", str(SAMPLE / "train.csv"), "--data.validation", str(SAMPLE / "valid.csv"), "--data.test", "null",
    "--data.text_columns", "[text]",
    "--vocabulary_size", "300", "--bucket_lengths", "[16, 32]",
    "--backbone.num_layers", "1", "--backbone.d_model", "32", "--backbone.num_heads", "2",
    "--backbone.ff_dim", "64", "--backbone.max_length", "32", "--backbone.dropout", "0.1",
    "--training.epochs", "2", "--training.batch_size", "16", "--training.early_stopping_patience", "0",
    "--training.checkpoint_steps", "3",
]


def _train_command(output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suite.cli", "train", "text_classification", "--output-dir", str(output_dir),
            *TINY, *extra]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _saved_progress(run: Path) -> dict | None:
    path = run / "checkpoints" / "checkpoint.npz"
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return json.loads(str(arrays["meta"]))["progress"]


def _weights(run: Path) -> list[np.ndarray]:
    return TextClassifier.load(run / "task").model.get_weights()


def test_sigkill_mid_epoch_then_resume_ends_with_uninterrupted_weights(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_command(reference), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (progress := _saved_progress(killed)) is None or (progress["epoch"], progress["step"]) < (1, 3):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    progress = _saved_progress(killed)
    assert progress["epoch"] < 2 and not (killed / "task").exists()

    resumed = subprocess.run(_train_command(killed, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and len(metrics["history"]["loss"]) == 2
    for got, want in zip(_weights(killed), _weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture
def model():
    """A compiled model whose optimizer has its slots, as `RunCheckpoint` needs."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, model):
    config = {"training": {"learning_rate": 0.001, "epochs": 2}}
    RunCheckpoint(tmp_path, model, config).save(TrainingProgress(epoch=1, step=4))
    assert RunCheckpoint(tmp_path, model, config).restore() == TrainingProgress(epoch=1, step=4)
    other = {"training": {"learning_rate": 0.01, "epochs": 2}}
    with pytest.raises(ValueError, match="different config.*training.learning_rate"):
        RunCheckpoint(tmp_path, model, other).restore()
    newer = {"training": {"learning_rate": 0.001, "epochs": 2, "max_steps": None}}
    with pytest.raises(ValueError, match=r"\(differing: training.max_steps\)"):
        RunCheckpoint(tmp_path, model, newer).restore()


def test_resume_accepts_an_option_added_since_the_checkpoint_while_it_keeps_its_default(tmp_path, model):
    RunCheckpoint(tmp_path, model, {"training": {"epochs": 2}}).save(TrainingProgress(epoch=1))
    defaults = {"training.max_steps": None, "training.epochs": 1}
    newer = {"training": {"epochs": 2, "max_steps": None}}
    assert RunCheckpoint(tmp_path, model, newer, defaults).restore() == TrainingProgress(epoch=1)
    changed = {"training": {"epochs": 2, "max_steps": 100}}
    with pytest.raises(ValueError, match=r"\(differing: training.max_steps\)"):
        RunCheckpoint(tmp_path, model, changed, defaults).restore()
    default_epochs = {"training": {"epochs": 1, "max_steps": None}}
    with pytest.raises(ValueError, match=r"\(differing: training.epochs\)"):
        RunCheckpoint(tmp_path, model, default_epochs, defaults).restore()


def test_progress_tracks_best_epoch_and_patience():
    progress = TrainingProgress()
    assert progress.end_epoch({"loss": 1.0, "val_loss": 0.5})
    assert not progress.end_epoch({"loss": 0.9, "val_loss": 0.6})
    assert progress.end_epoch({"loss": 0.8, "val_loss": 0.4})
    assert not progress.end_epoch({"loss": 0.7, "val_loss": float("nan")})
    assert (progress.epoch, progress.best, progress.best_epoch, progress.wait) == (4, 0.4, 2, 1)
    assert progress.history["val_loss"][:3] == [0.5, 0.6, 0.4]


def test_early_stopping_needs_validation_data():
    with pytest.raises(ValueError, match="early_stopping_patience needs validation data"):
        TextClassifier.train(SAMPLE / "train.csv", {"training": {"epochs": 1, "early_stopping_patience": 2}},
                             vocabulary_size=300, verbose=0)


def test_training_epochs_read_batches_without_tf_data_autotuning(monkeypatch):
    fit, autotuned = keras.Model.fit, []

    def recording_fit(self, x, *args, **kwargs):
        autotuned.append(x.options().autotune.enabled)
        return fit(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    config = {
        "vocabulary_size": 300, "bucket_lengths": [16, 32],
        "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "max_length": 32},
        "training": {"epochs": 2, "batch_size": 16},
    }
    TextClassifier.train(SAMPLE / "train.csv", config, verbose=0)
    assert autotuned == [False, False]


def test_resume_needs_an_output_dir():
    with pytest.raises(ValueError, match="resume=True needs the output_dir"):
        TextClassifier.train(SAMPLE / "train.csv", {"training": {"epochs": 1}}, vocabulary_size=300, verbose=0,
                             resume=True)


def test_steps_per_execution_trains_the_same_weights_as_one_step_a_call():
    config = {
        "vocabulary_size": 300, "bucket_lengths": [16, 32],
        "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "max_length": 32},
        "training": {"epochs": 1, "batch_size": 16},
    }
    one = TextClassifier.train(SAMPLE / "train.csv", config, verbose=0)
    steps = int(one.model.optimizer.iterations)
    assert steps % 3, "the test needs a partial last execution"
    several = TextClassifier.train(SAMPLE / "train.csv", config, verbose=0, **{"training.steps_per_execution": 3})
    assert several.model.steps_per_execution == 3 and int(several.model.optimizer.iterations) == steps
    for got, want in zip(several.model.get_weights(), one.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rates = several.training_metrics["history"]["examples_per_second"]
    assert len(rates) == 1 and rates[0] > 0


class _SavedSteps:
    def __init__(self):
        self.saved = []

    def save(self, progress):
        self.saved.append(progress.step)


def test_checkpoints_with_several_steps_an_execution_fall_on_the_first_boundary_past_each_multiple(model):
    checkpoint, progress = _SavedSteps(), TrainingProgress(step=2)
    every = CheckpointEvery(4, progress, checkpoint)
    every.set_model(model)
    model.optimizer.iterations.assign(40)
    every.on_train_begin()
    for batch in range(0, 19, 3):
        model.optimizer.iterations.assign(40 + batch)
        every.on_train_batch_begin(batch)
    assert checkpoint.saved == [5, 8, 14, 17, 20] and progress.step == 20
