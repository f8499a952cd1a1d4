"""The training loop every task runs (`Task.fit`): XLA steps, seeded epochs, checkpoints, best epoch."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import keras
import tensorflow as tf

from suite.config import flat_fields, to_dict
from suite.core.checkpoint import CheckpointEvery, RunCheckpoint, TrainingProgress, optimizer_steps
from suite.io import write_json_atomic


def fit_task(task, train_data, validation_data=None, output_dir: str | Path | None = None, verbose="auto",
             resume: bool = False) -> dict:
    """`task.fit`'s loop (see there): trains `task.model` on read data, returns the run's metrics."""
    training = task.config.training
    if training.early_stopping_patience and validation_data is None:
        raise ValueError("training.early_stopping_patience needs validation data to monitor.")
    if resume and output_dir is None:
        raise ValueError("resume=True needs the output_dir of the run to resume.")
    val_ds = None if validation_data is None else task.dataset(validation_data)
    total_steps = training.epochs * task.steps_per_epoch(train_data)
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    task.compile_in_scope(total_steps=total_steps, build_optimizer=True)
    progress, checkpoint, best_weights = TrainingProgress(), None, None
    callbacks: list[keras.callbacks.Callback] = [_Throughput(*task.throughput_unit())]
    if output_dir is not None:
        output_dir = Path(output_dir)
        identity = {"config": to_dict(task.config), "preprocessor": task.preprocessor.get_config()}
        defaults = {f"config.{key}": default for key, _, default in flat_fields(type(task.config))}
        checkpoint = RunCheckpoint(output_dir / "checkpoints", task.model, identity, defaults)
        if resume:
            progress = checkpoint.restore() or progress
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(output_dir / "logs")))
    start = time.perf_counter()
    budget = _Budget(training, start)
    callbacks.append(budget)
    averaged = training.ema_momentum is not None
    if averaged:
        callbacks.append(_ValidateAveraged())
    while progress.epoch < training.epochs and not progress.stopped:
        epoch_callbacks = [*callbacks, _RunProgbar(training.epochs)] if verbose else list(callbacks)
        if checkpoint is not None:
            epoch_callbacks.append(CheckpointEvery(training.checkpoint_steps, progress, checkpoint))
        history = task.model.fit(
            _epoch_dataset(task, train_data, progress.epoch).skip(progress.step),
            validation_data=val_ds,
            initial_epoch=progress.epoch,
            epochs=progress.epoch + 1,
            callbacks=epoch_callbacks,
            shuffle=False,
            verbose=verbose,
        )
        if progress.end_epoch({k: float(v[-1]) for k, v in history.history.items()}):
            with _averaged_weights(task.model) if averaged else contextlib.nullcontext():
                if checkpoint is None:
                    best_weights = task.model.get_weights()
                else:
                    checkpoint.save_best()
        progress.stopped = ((bool(training.early_stopping_patience) and progress.wait >= training.early_stopping_patience)
                            or budget.spent())
        if checkpoint is not None:
            checkpoint.save(progress)
    if progress.best_epoch is not None:
        if checkpoint is None:
            task.model.set_weights(best_weights)
        else:
            checkpoint.restore_best()
    elif averaged:
        task.model.optimizer.finalize_variable_values(task.model.trainable_variables)
    metrics = {
        "domain": task.domain,
        "train_seconds": round(time.perf_counter() - start, 2),
        "epochs_run": progress.epoch,
        "best_epoch": None if progress.best_epoch is None else progress.best_epoch + 1,
        "history": progress.history,
    }
    if validation_data is not None:
        metrics["validation"] = task.metrics(validation_data)
    if output_dir is not None:
        write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


class _Throughput(keras.callbacks.Callback):
    """Adds `<unit>_per_second`, the epoch's training rate so far, to the logs the progress bar, TensorBoard
    and the history see. Timed from the end of the epoch's first execution (`steps_per_execution` steps),
    which may compile."""

    def __init__(self, unit: str, per_step: int):
        super().__init__()
        self.key, self.per_step = f"{unit}_per_second", per_step

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.rate = None, None

    def on_train_batch_end(self, batch, logs=None):
        now, steps = time.perf_counter(), optimizer_steps(self.model)
        if self.start is None:
            self.start, self.first = now, steps
        elif logs is not None:
            self.rate = self.per_step * (steps - self.first) / (now - self.start)
            logs[self.key] = self.rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.rate is not None:
            logs[self.key] = self.rate


class _Budget(keras.callbacks.Callback):
    """Stops `fit` after the first execution (`training.steps_per_execution` steps) that spends
    `training.max_seconds` (counted from `start`, a `time.perf_counter()` value) or
    `training.max_steps` (the optimizer's `iterations`, across epochs and resumes); either may be null."""

    def __init__(self, training, start: float):
        super().__init__()
        self.deadline = None if training.max_seconds is None else start + training.max_seconds
        self.max_steps = training.max_steps

    def spent(self) -> bool:
        return ((self.deadline is not None and time.perf_counter() >= self.deadline)
                or (self.max_steps is not None and optimizer_steps(self.model) >= self.max_steps))

    def on_train_batch_end(self, batch, logs=None):
        if self.spent():
            self.model.stop_training = True


def _swap_averages(model: keras.Model) -> None:
    """Exchanges the model's trainable weights with the optimizer's moving averages of them (`use_ema`)."""
    averages = model.optimizer._model_variables_moving_average
    for variable, average in zip(model.trainable_variables, averages):
        if average is not None:
            value = keras.ops.copy(variable.value)
            variable.assign(average)
            average.assign(value)


@contextlib.contextmanager
def _averaged_weights(model: keras.Model):
    """Within the block the model holds the moving averages of its weights; the raw ones after."""
    _swap_averages(model)
    try:
        yield model
    finally:
        _swap_averages(model)


class _ValidateAveraged(keras.callbacks.Callback):
    """Validates on the averaged weights and keeps training the raw ones (`ema_momentum`).

    Keras' `fit` ends by overwriting the weights with their averages (`finalize_variable_values`),
    while this loop goes on training the raw weights in the next epoch's `fit`: they are kept at
    the epoch's end and put back when `fit` ends.
    """

    def on_test_begin(self, logs=None):
        _swap_averages(self.model)

    def on_test_end(self, logs=None):
        _swap_averages(self.model)

    def on_train_begin(self, logs=None):
        self.raw = None

    def on_epoch_end(self, epoch, logs=None):
        self.raw = [keras.ops.copy(variable.value) for variable in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        for variable, value in zip(self.model.trainable_variables, self.raw or ()):
            variable.assign(value)


def _epoch_dataset(task, train_data, epoch: int) -> tf.data.Dataset:
    """The training batches of `epoch`: shuffling and random draws seeded by (seed, epoch).

    tf.data's autotuning is off: `fit` drops the epoch's iterator when it returns, and with autotuning
    that waits for tf.data's model thread, which sleeps between its tunings for up to a minute (0-35 s
    an epoch measured on 2 cores). AUTOTUNE parallelism then means one call per core, and prefetch
    buffers still grow as needed.
    """
    tf.random.set_seed(task.config.training.seed * 100_003 + epoch)
    options = tf.data.Options()
    options.autotune.enabled = False
    return task.dataset(train_data, training=True).with_options(options)


def batch_seeds(seed: int, training: bool) -> tf.data.Dataset:
    """Stateless seeds `(2,)` int64, one a batch, for random draws in a data pipeline (masks, negatives).

    Training seeds also follow the global seed that the loop sets for each epoch, so the draws are new
    every epoch and the same again on resume. Otherwise they depend on `seed` alone, so held-out figures
    use the same draws in every epoch and in `evaluate`, whatever the global seed is by then.
    """
    if training:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.counter().map(lambda index: tf.stack([tf.constant(seed, tf.int64), index]))


class _RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, counting epochs out of the run's total (`fit` runs one at a time)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params: dict) -> None:
        super().set_params({**params, "epochs": self.run_epochs})
