"""The Task API every domain follows: train, evaluate, predict, save/load, export."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import keras
import tensorflow as tf

from suite import __version__
from suite.config import from_dict, load_config, to_dict
from suite.distribute import STRATEGIES, make_strategy, xla_steps_allowed
from suite.export import write_saved_model
from suite.io import staged_directory, write_json_atomic
from suite.tasks.checkpoint import CheckpointEvery, RunCheckpoint, TrainingProgress

TASKS: dict[str, type["Task"]] = {}

# Bucketed datasets have no known length, so Keras says so at the end of every epoch.
warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)


DECAYS = ("cosine", "linear")


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation settings shared by every domain.

    The learning rate rises linearly over `warmup_fraction` of the steps, then decays to zero along
    a cosine (`decay: cosine`) or a line (`decay: linear`, BERT's fine-tuning schedule).
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    early_stopping_patience: int = 0
    seed: int = 0
    checkpoint_steps: int = 200
    strategy: str = "default"
    decay: str = "cosine"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {list(DECAYS)}, got {self.decay!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}.")


def warmup_schedule(training: TrainingConfig, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up over `warmup_fraction` of the steps, then `training.decay` to zero."""
    warmup = int(training.warmup_fraction * total_steps)
    if training.decay == "linear":
        return WarmupLinearDecay(training.learning_rate, warmup, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=training.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="suite")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """From 0 up to `peak` over `warmup_steps`, then linearly down to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        fraction = keras.ops.minimum(step / self.warmup_steps, decay) if self.warmup_steps else decay
        return self.peak * keras.ops.clip(fraction, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def inference_function(model: keras.Model, jit_compile: bool = True):
    """`model(inputs, training=False)` as a `tf.function`, XLA-compiled when `jit_compile`."""
    return tf.function(lambda inputs: model(inputs, training=False), jit_compile=jit_compile)


class Task:
    """A trained model for one domain: stem + backbone + head, with its preprocessing.

    Subclasses set `domain`, `config_class` and `preprocessor_class`, and implement the
    hooks below. `config_class` is a dataclass with a `training: TrainingConfig` field.
    """

    domain: ClassVar[str]
    config_class: ClassVar[type]
    preprocessor_class: ClassVar[type]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "domain" in cls.__dict__:
            TASKS[cls.domain] = cls

    def __init__(self, model: keras.Model, preprocessor, config):
        self.model = model
        self.preprocessor = preprocessor
        self.config = config

    @property
    def strategy(self) -> tf.distribute.Strategy:
        """The `tf.distribute` strategy `self.model` was built under (`training.strategy`)."""
        return self.model.distribute_strategy

    def compile_in_scope(self, total_steps: int, build_optimizer: bool = False) -> None:
        """`compile` in the scope of `self.strategy` (and, with `build_optimizer`, the
        optimizer's variables). Steps stay XLA-compiled only where the strategy allows it
        (`suite.distribute.xla_steps_allowed`: a single replica)."""
        with self.strategy.scope():
            self.compile(total_steps)
            if build_optimizer:
                self.model.optimizer.build(self.model.trainable_variables)
        if not xla_steps_allowed(self.strategy):
            self.model.jit_compile = False

    # Hooks -------------------------------------------------------------------------------

    @classmethod
    def read(cls, data, config):
        """Reads and validates `data` (path or DataFrame) into the domain's table.

        Must accept its own output unchanged, so read data can be passed anywhere."""
        raise NotImplementedError

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        raise NotImplementedError

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        raise NotImplementedError

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """Batches of `(inputs, targets)` for `data` as read by `read`."""
        raise NotImplementedError

    def compile(self, total_steps: int) -> None:
        """Compiles `self.model` (optimizer, loss, metrics) with `jit_compile=True`."""
        raise NotImplementedError

    def serving_endpoints(self, jit_compile: bool) -> dict:
        """`{signature_name: (fn, input_signature)}` for export; one is `serving_default`.

        Run Keras models inside them through `inference_function(model, jit_compile)`.
        """
        raise NotImplementedError

    def export_resources(self) -> list:
        """TF trackables (tokenizers, lookup tables) the serving endpoints use."""
        return []

    def example_inputs(self) -> dict | None:
        """A `serving_default` request's columnar `inputs` (JSON-ready), for `signature.json`."""
        return None

    # Training ----------------------------------------------------------------------------

    @classmethod
    def resolve_config(cls, config=None, overrides: dict | None = None):
        """`config` (dataclass, dict, YAML path or None) with `overrides` applied.

        A key that is not a top-level field but is one of `training`'s (`epochs`) is read
        as `training.<key>`.
        """
        training_keys = {f.name for f in dataclasses.fields(TrainingConfig)}
        top_keys = {f.name for f in dataclasses.fields(cls.config_class)}
        resolved = {
            f"training.{key}" if key not in top_keys and key in training_keys else key: value
            for key, value in (overrides or {}).items()
        }
        return load_config(cls.config_class, config, resolved)

    @classmethod
    def train(
        cls,
        data,
        config=None,
        *,
        validation_data=None,
        backbone: "Task | None" = None,
        output_dir: str | Path | None = None,
        verbose: str | int = "auto",
        resume: bool = False,
        **overrides,
    ) -> "Task":
        """Fits the preprocessing on `data`, builds the model and trains it with XLA.

        `config` is a config dataclass, a dict or a YAML path; `overrides` set its keys
        (`epochs=3` sets `training.epochs` when the key is not top-level; dotted keys such
        as `**{"backbone.num_layers": 2}` reach nested fields). `backbone` is a trained task
        whose preprocessing and backbone weights this model starts from (fine-tuning).
        With `output_dir`, TensorBoard logs, checkpoints and `metrics.json` go there, and
        `resume=True` continues the run whose checkpoint is there (see `fit`).
        """
        config = cls.resolve_config(config, overrides)
        keras.utils.set_random_seed(config.training.seed)
        train_data = cls.read(data, config)
        with make_strategy(config.training.strategy).scope():  # also covers overrides of `create`
            task = cls.create(train_data, config, backbone)
        validation = None if validation_data is None else cls.read(validation_data, config)
        task.training_metrics = task.fit(train_data, validation, output_dir, verbose, resume)
        return task

    @classmethod
    def run(cls, config, output_dir: str | Path, resume: bool = False) -> tuple["Task", dict]:
        """The task script's job: train on `config.data`, evaluate on its test split, save.

        Writes `output_dir/metrics.json` and the trained task to `output_dir/task`; with
        `resume`, continues the run checkpointed in `output_dir`.
        """
        output_dir = Path(output_dir)
        data = config.data
        task = cls.train(data.train, config, validation_data=data.validation, output_dir=output_dir, resume=resume)
        metrics = task.training_metrics
        if data.test:
            metrics["test"] = task.evaluate(data.test)
            write_json_atomic(output_dir / "metrics.json", metrics)
        task.save(output_dir / "task")
        return task, metrics

    @classmethod
    def create(cls, train_data, config, backbone: "Task | None" = None) -> "Task":
        """An untrained task: preprocessing fitted on `train_data` and a freshly built model,
        built in the scope of the strategy `training.strategy` names."""
        if backbone is not None:
            raise ValueError(f"{cls.__name__} cannot start from a pretrained backbone.")
        preprocessor = cls.fit_preprocessor(train_data, config)
        with make_strategy(config.training.strategy).scope():
            return cls(cls.build_model(preprocessor, config), preprocessor, config)

    def fit(
        self,
        train_data,
        validation_data=None,
        output_dir: str | Path | None = None,
        verbose="auto",
        resume: bool = False,
    ) -> dict:
        """Trains `self.model` on read data; returns (and writes) the run's metrics.

        Each epoch reads the training data in an order (and with augmentation draws) fixed
        by `training.seed` and the epoch number. With `output_dir`, a checkpoint is written
        atomically every `training.checkpoint_steps` steps and at each epoch end, and
        `resume=True` continues from it, ending with the same weights as an uninterrupted
        run. With validation data the weights of the epoch with the lowest validation loss
        are kept; `training.early_stopping_patience` epochs without improvement stop the run.
        """
        training = self.config.training
        if training.early_stopping_patience and validation_data is None:
            raise ValueError("training.early_stopping_patience needs validation data to monitor.")
        if resume and output_dir is None:
            raise ValueError("resume=True needs the output_dir of the run to resume.")
        val_ds = None if validation_data is None else self.dataset(validation_data)
        steps_per_epoch = math.ceil(len(train_data) / training.batch_size)
        self.compile_in_scope(total_steps=training.epochs * steps_per_epoch, build_optimizer=True)
        progress, checkpoint, best_weights = TrainingProgress(), None, None
        callbacks: list[keras.callbacks.Callback] = []
        if output_dir is not None:
            output_dir = Path(output_dir)
            identity = {"config": to_dict(self.config), "preprocessor": self.preprocessor.get_config()}
            checkpoint = RunCheckpoint(output_dir / "checkpoints", self.model, identity)
            if resume:
                progress = checkpoint.restore() or progress
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(output_dir / "logs")))
        start = time.perf_counter()
        while progress.epoch < training.epochs and not progress.stopped:
            epoch_callbacks = [*callbacks, _RunProgbar(training.epochs)] if verbose else list(callbacks)
            if checkpoint is not None:
                epoch_callbacks.append(CheckpointEvery(training.checkpoint_steps, progress, checkpoint))
            history = self.model.fit(
                self._epoch_dataset(train_data, progress.epoch).skip(progress.step),
                validation_data=val_ds,
                initial_epoch=progress.epoch,
                epochs=progress.epoch + 1,
                callbacks=epoch_callbacks,
                shuffle=False,
                verbose=verbose,
            )
            if progress.end_epoch({k: float(v[-1]) for k, v in history.history.items()}):
                if checkpoint is None:
                    best_weights = self.model.get_weights()
                else:
                    checkpoint.save_best()
            progress.stopped = bool(training.early_stopping_patience) and progress.wait >= training.early_stopping_patience
            if checkpoint is not None:
                checkpoint.save(progress)
        if progress.best_epoch is not None:
            if checkpoint is None:
                self.model.set_weights(best_weights)
            else:
                checkpoint.restore_best()
        metrics = {
            "domain": self.domain,
            "train_seconds": round(time.perf_counter() - start, 2),
            "epochs_run": progress.epoch,
            "best_epoch": None if progress.best_epoch is None else progress.best_epoch + 1,
            "history": progress.history,
        }
        if validation_data is not None:
            metrics["validation"] = self.evaluate(validation_data)
        if output_dir is not None:
            write_json_atomic(output_dir / "metrics.json", metrics)
        return metrics

    def _epoch_dataset(self, train_data, epoch: int) -> tf.data.Dataset:
        """The training batches of `epoch`: shuffling and random draws seeded by (seed, epoch)."""
        tf.random.set_seed(self.config.training.seed * 100_003 + epoch)
        return self.dataset(train_data, training=True)

    # Inference and persistence -----------------------------------------------------------

    def evaluate(self, data) -> dict:
        """Metrics of the model on `data` (a path or DataFrame the domain reads)."""
        dataset = self.dataset(self.read(data, self.config))
        return {k: float(v) for k, v in self.model.evaluate(dataset, return_dict=True, verbose=0).items()}

    def predict(self, inputs):
        raise NotImplementedError

    def cli_predict(self, values: list[str]):
        """Predictions for command-line inputs, as JSON-ready data."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Saves to a folder: `model.keras` and `task.json` (config + preprocessing assets).

        The folder is replaced only once the new one is completely written.
        """
        path = Path(path)
        with staged_directory(path, overwrite=True) as staging:
            self.model.save(staging / "model.keras")
            write_json_atomic(
                staging / "task.json",
                {
                    "domain": self.domain,
                    "suite_version": __version__,
                    "config": to_dict(self.config),
                    "preprocessor": self.preprocessor.get_config(),
                },
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Task":
        """Loads a task saved by `save`; on `Task` itself it dispatches on the saved domain."""
        path = Path(path)
        manifest_path = path / "task.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path} is not a saved task: {manifest_path} is missing.")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        task_class = TASKS.get(manifest["domain"])
        if task_class is None:
            raise ValueError(f"{path} holds a {manifest['domain']!r} task; known domains: {sorted(TASKS)}.")
        if cls is not Task and task_class is not cls:
            raise ValueError(f"{path} holds a {task_class.__name__}, not a {cls.__name__}.")
        config = from_dict(task_class.config_class, manifest["config"])
        preprocessor = task_class.preprocessor_class.from_config(manifest["preprocessor"])
        with make_strategy(config.training.strategy).scope():
            model = keras.saving.load_model(path / "model.keras", compile=False)
        task = task_class(model, preprocessor, config)
        task.compile_in_scope(total_steps=1)
        return task

    def export(
        self,
        export_dir: str | Path = "saved_models",
        model_name: str | None = None,
        version: int | None = None,
        jit_compile: bool = False,
    ) -> Path:
        """Writes a standalone SavedModel to `export_dir/<model_name>/<version>/`.

        It serves with only `tensorflow` and `tensorflow_text` imported: preprocessing and
        postprocessing are in the graph. Signatures are traced without XLA unless
        `jit_compile` (stock TF Serving cannot run XLA-compiled functions or XLA-only `Xla*`
        ops; tests/test_export_ops.py checks every domain's graph). An export with
        `jit_compile=True` keeps XLA and serves only where XLA is enabled.
        """
        return write_saved_model(
            self.serving_endpoints(jit_compile),
            [self.model, *self.export_resources()],
            export_dir,
            model_name or self.domain,
            version,
            self.example_inputs(),
        )


class _RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, counting epochs out of the run's total (`fit` runs one at a time)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params: dict) -> None:
        super().set_params({**params, "epochs": self.run_epochs})
