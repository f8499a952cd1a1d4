"""Crash-safe training state: where a run stands, and atomic checkpoints of everything it needs."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np

from suite.io import atomic_file


@dataclasses.dataclass
class TrainingProgress:
    """Where a run stands: the next epoch, how many of its steps are done, and model selection.

    `best` is the lowest validation loss so far (at `best_epoch`, 0-based); `wait` counts the
    epochs since it last improved; `stopped` is set by early stopping.
    """

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def end_epoch(self, logs: dict[str, float], monitor: str = "val_loss") -> bool:
        """Records an epoch's `logs`; returns whether `monitor` improved on the best so far."""
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        value = logs.get(monitor)
        improved = value is not None and math.isfinite(value) and (self.best is None or value < self.best)
        if improved:
            self.best, self.best_epoch, self.wait = value, self.epoch, 0
        elif value is not None:
            self.wait += 1
        self.epoch, self.step = self.epoch + 1, 0
        return improved


class RunCheckpoint:
    """A run's checkpoints in `directory`, each one file replaced atomically.

    `checkpoint.npz` holds every variable training depends on (model weights, optimizer slots
    and step, the dropout layers' seed states) with the progress; `best.npz` holds the model
    variables of the best validation epoch. `identity` (config and preprocessing) is stored
    with them, and a checkpoint written for another identity is refused on restore.

    `defaults` maps dotted identity keys to their default values: a key that the saved identity
    lacks (an option added since the checkpoint was written) still matches while it has its
    default, so a library upgrade that adds an inert option does not strand a run.
    """

    def __init__(self, directory: str | Path, model: keras.Model, identity: dict,
                 defaults: dict[str, Any] | None = None):
        self.directory = Path(directory)
        self.model = model
        self.identity = _plain(identity)
        self.defaults = _plain(defaults or {})

    @property
    def path(self) -> Path:
        return self.directory / "checkpoint.npz"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.npz"

    def _training_variables(self) -> list:
        return [*self.model.variables, *self.model.optimizer.variables]

    def save(self, progress: TrainingProgress) -> None:
        meta = {"identity": self.identity, "progress": dataclasses.asdict(progress)}
        _write_variables(self.path, self._training_variables(), meta)

    def save_best(self) -> None:
        _write_variables(self.best_path, self.model.variables, {"identity": self.identity})

    def restore(self) -> TrainingProgress | None:
        """Loads the latest checkpoint into the model and optimizer; None when there is none."""
        if not self.path.is_file():
            return None
        meta = _read_variables(self.path, self._training_variables())
        self._check_identity(meta["identity"])
        return TrainingProgress(**meta["progress"])

    def restore_best(self) -> None:
        _read_variables(self.best_path, self.model.variables)

    def _check_identity(self, saved: dict) -> None:
        if saved == self.identity:
            return
        saved, current = _leaves(saved), _leaves(self.identity)
        differing = sorted(
            key for key in set(saved) | set(current)
            if saved.get(key, _ABSENT) != current.get(key, _ABSENT)
            and not (key not in saved and key in self.defaults and current.get(key) == self.defaults[key])
        )
        if not differing:
            return
        raise ValueError(
            f"{self.path} was written by a run with a different config or preprocessing "
            f"(differing: {', '.join(differing[:5])}); resume with the same config and data, "
            "or start a new run in another output folder."
        )


def optimizer_steps(model: keras.Model) -> int:
    """The steps `model`'s optimizer has taken (its `iterations`, mirrored or not)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class CheckpointEvery(keras.callbacks.Callback):
    """Checkpoints before every `every`-th step of the epoch in `progress`; with several steps an
    execution (`steps_per_execution`), at the first execution boundary at or after each multiple.
    Steps are counted by the optimizer, so an epoch's last, partial execution counts what it ran.

    Saving before a step, never after the last, leaves every checkpoint with steps to run.
    """

    def __init__(self, every: int, progress: TrainingProgress, checkpoint: RunCheckpoint):
        super().__init__()
        self.every, self.progress, self.checkpoint = every, progress, checkpoint

    def on_train_begin(self, logs=None) -> None:
        self.first_step = self.progress.step - optimizer_steps(self.model)

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        step, previous = self.first_step + optimizer_steps(self.model), self.progress.step
        self.progress.step = step
        if step // self.every > previous // self.every:
            self.checkpoint.save(self.progress)


def _write_variables(path: Path, variables: list, meta: dict) -> None:
    arrays = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
    arrays["paths"] = np.array([v.path for v in variables])
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_file(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _read_variables(path: Path, variables: list) -> dict:
    with np.load(path) as arrays:
        paths = [str(p) for p in arrays["paths"]]
        expected = [v.path for v in variables]
        if paths != expected:
            raise ValueError(
                f"{path} holds variables {len(paths)} that do not match this model's {len(expected)}; "
                "was it written for another model?"
            )
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"v{i}"])
        return json.loads(str(arrays["meta"]))


_ABSENT = object()


def _plain(values):
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def _leaves(values: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` as `{"a.b": 1}`; an empty mapping is a leaf."""
    leaves = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves
