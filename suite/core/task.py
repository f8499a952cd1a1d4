"""The Task API every domain follows: train, evaluate, predict, save/load, export."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import warnings
from pathlib import Path
from typing import ClassVar

import keras
import tensorflow as tf

from suite._version import __version__
from suite.config import ConfigError, from_dict, load_config, to_dict
from suite.core.optim import TrainingConfig, adamw, warmup_schedule
from suite.core.training import fit_task
from suite.distribute import make_strategy, xla_steps_allowed
from suite.export import write_saved_model
from suite.io import staged_directory, write_json_atomic

TASKS: dict[str, type["Task"]] = {}

# Bucketed datasets have no known length, so Keras says so at the end of every epoch.
warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)


class Task:
    """A trained model for one domain: stem + backbone + head, with its preprocessing.

    Subclasses set `domain`, `config_class` and `preprocessor_class`, and implement the
    hooks below; `train`, `run`, `fit`, `evaluate`, `save`, `load` and `export` are the same
    for every domain. `config_class` is a dataclass with a `training: TrainingConfig` field
    and a `data` field with `train`, `validation` and `test` sources. Its default YAML file
    (benchmark settings) ships in the domain's package: `configs/<domain>.yaml`.
    """

    domain: ClassVar[str]
    config_class: ClassVar[type]
    preprocessor_class: ClassVar[type]
    no_decay: ClassVar[tuple[str, ...]] = ("bias", "gamma", "beta", "embeddings")
    optimizer_options: ClassVar[dict] = {}

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
        optimizer's variables), running `training.steps_per_execution` steps a call. Steps stay
        XLA-compiled only where the strategy allows it (`suite.distribute.xla_steps_allowed`: a
        single replica)."""
        with self.strategy.scope():
            self.compile(total_steps)
            self.model.steps_per_execution = self.config.training.steps_per_execution
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
    def split(cls, data, config) -> dict:
        """The parts of one read data set that the config's split policy makes: `{"train": ...}`
        and, where the policy holds them out, `"validation"` and `"test"`. Default: no split."""
        return {"train": data}

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        raise NotImplementedError

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        raise NotImplementedError

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """Batches of `(inputs, targets)` for `data` as read by `read`."""
        raise NotImplementedError

    def steps_per_epoch(self, data) -> int:
        """Training steps in one epoch over read `data`; the learning-rate schedule spans them."""
        return math.ceil(len(data) / self.config.training.batch_size)

    def throughput_unit(self) -> tuple[str, int]:
        """`(unit, count)`: what one training step processes, for the rate the progress bar shows."""
        return "examples", self.config.training.batch_size

    def compile(self, total_steps: int) -> None:
        """Compiles `self.model` (`self.optimizer(total_steps)`, loss, metrics) with `jit_compile=True`."""
        raise NotImplementedError

    def learning_rate(self, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
        """`training.learning_rate` with warm-up and decay over `total_steps` (`warmup_schedule`)."""
        return warmup_schedule(self.config.training, total_steps)

    def optimizer(self, total_steps: int) -> keras.optimizers.Optimizer:
        """AdamW on `learning_rate(total_steps)` with `optimizer_options`, no weight decay on the
        variables `no_decay` names (norms, biases, embeddings)."""
        return adamw(self.config.training, self.learning_rate(total_steps), self.no_decay, **self.optimizer_options)

    def evaluation_part(self, data, part: str):
        """The `part` of read data that `evaluate` scores; default: all of it."""
        return data

    def metrics(self, data, **options) -> dict:
        """`evaluate`'s figures for read data; default: the compiled loss and metrics."""
        return {k: float(v) for k, v in self.model.evaluate(self.dataset(data), return_dict=True, verbose=0).items()}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        """`{signature_name: (fn, input_signature)}` for export; one is `serving_default`.

        Run Keras models inside them through `inference_function(model, jit_compile)`.
        """
        raise NotImplementedError

    def export_resources(self) -> list:
        """TF trackables (tokenizers, lookup tables) the serving endpoints use."""
        return []

    def example_inputs(self) -> dict:
        """A `serving_default` request's columnar `inputs` (JSON-ready), for `signature.json`."""
        raise NotImplementedError

    def example_requests(self) -> dict[str, dict]:
        """Example `inputs` per signature, for `signature.json` and TF Serving's warm-up requests;
        a signature left out takes `serving_default`'s where its input names agree."""
        return {"serving_default": self.example_inputs()}

    # Training ----------------------------------------------------------------------------

    @classmethod
    def resolve_config(cls, config=None, overrides: dict | None = None):
        """`config` (dataclass, dict, YAML path, the name of a config the task ships such as
        "image_classification_small" (see `config_names`), or None) with `overrides` applied.

        A key that is not a top-level field but is one of `training`'s (`epochs`) is read
        as `training.<key>`.
        """
        if isinstance(config, (str, Path)) and not Path(config).is_file():
            if str(config) not in cls.config_names():
                raise ConfigError(f"Config file {config} does not exist, and {cls.__name__} ships no config of "
                                  f"that name (it ships: {', '.join(cls.config_names())}).")
            config = cls.config_file(str(config))
        training_keys = {f.name for f in dataclasses.fields(TrainingConfig)}
        top_keys = {f.name for f in dataclasses.fields(cls.config_class)}
        resolved = {
            f"training.{key}" if key not in top_keys and key in training_keys else key: value
            for key, value in (overrides or {}).items()
        }
        return load_config(cls.config_class, config, resolved)

    @classmethod
    def config_file(cls, name: str | None = None) -> Path:
        """The YAML config `name` (default: the domain's) shipped in the task's package `configs/`."""
        return cls._configs_folder() / f"{name or cls.domain}.yaml"

    @classmethod
    def config_names(cls) -> list[str]:
        """The names of the configs shipped for this task: the domain's and its variants (`<domain>_*`)."""
        folder = cls._configs_folder()
        names = [] if not folder.is_dir() else sorted(path.stem for path in folder.glob(f"{cls.domain}*.yaml"))
        return [name for name in names if name == cls.domain or name.startswith(f"{cls.domain}_")]

    @classmethod
    def _configs_folder(cls) -> Path:
        return Path(str(importlib.resources.files(cls.__module__.rsplit(".", 1)[0]) / "configs"))

    @classmethod
    def data_parts(cls, config, data=None, validation_data=None) -> dict:
        """Read `{"train", "validation", "test"}` data (`None` where there is none).

        `data` defaults to `config.data.train`; it is cut by the config's split policy (`split`).
        `validation_data` (default, when `data` is not given, `config.data.validation`) and, when
        `data` is not given, `config.data.test` are read as they are and replace those parts.
        """
        source, configured = config.data, data is None
        data = source.train if configured else data
        parts = {"train": None, "validation": None, "test": None}
        if data is not None:
            parts.update(cls.split(cls.read(data, config), config))
        if validation_data is None and configured:
            validation_data = source.validation
        if validation_data is not None:
            parts["validation"] = cls.read(validation_data, config)
        if configured and source.test is not None:
            parts["test"] = cls.read(source.test, config)
        return parts

    @classmethod
    def train(
        cls,
        data=None,
        config=None,
        *,
        validation_data=None,
        init_from: "Task | None" = None,
        output_dir: str | Path | None = None,
        verbose: str | int = "auto",
        resume: bool = False,
        **overrides,
    ) -> "Task":
        """Fits the preprocessing on the training data, builds the model and trains it with XLA.

        `data` (a path, DataFrame or what `read` returns; default `config.data.train`) is cut by
        the config's split policy; `validation_data` replaces the validation part it holds out.
        `config` is a config dataclass, a dict or a YAML path; `overrides` set its keys
        (`epochs=3` sets `training.epochs` when the key is not top-level; dotted keys such
        as `**{"backbone.num_layers": 2}` reach nested fields). `init_from` is a trained task
        whose preprocessing and backbone weights this model starts from (fine-tuning).
        With `output_dir`, TensorBoard logs, checkpoints and `metrics.json` go there, and
        `resume=True` continues the run whose checkpoint is there (see `fit`).
        """
        config = cls.resolve_config(config, overrides)
        return cls._train(cls.data_parts(config, data, validation_data), config, init_from, output_dir, verbose, resume)

    @classmethod
    def _train(cls, parts: dict, config, init_from, output_dir, verbose, resume) -> "Task":
        if parts["train"] is None:
            raise ValueError(f"{cls.__name__}: no training data: the config's data.train is empty; pass `data` "
                             f"to train() or set data.train (`--data.train PATH`).")
        keras.utils.set_random_seed(config.training.seed)
        with make_strategy(config.training.strategy).scope():  # also covers overrides of `create`
            task = cls.create(parts["train"], config, init_from)
        task.training_metrics = task.fit(parts["train"], parts["validation"], output_dir, verbose, resume)
        return task

    @classmethod
    def run(cls, config, output_dir: str | Path, resume: bool = False, verbose: str | int = "auto") -> tuple["Task", dict]:
        """The task script's job: train on `config.data`, evaluate on its test part, save.

        Writes `output_dir/metrics.json` and the trained task to `output_dir/task`; with
        `resume`, continues the run checkpointed in `output_dir`.
        """
        output_dir = Path(output_dir)
        parts = cls.data_parts(config)
        task = cls._train(parts, config, None, output_dir, verbose, resume)
        metrics = {**task.training_metrics, "data_sizes": {name: len(part) for name, part in parts.items() if part is not None}}
        if parts["test"] is not None:
            metrics["test"] = task.metrics(parts["test"])
        write_json_atomic(output_dir / "metrics.json", metrics)
        task.save(output_dir / "task")
        return task, metrics

    @classmethod
    def create(cls, train_data, config, init_from: "Task | None" = None) -> "Task":
        """An untrained task: preprocessing fitted on `train_data` and a freshly built model,
        built in the scope of the strategy `training.strategy` names."""
        if init_from is not None:
            raise ValueError(f"{cls.__name__} cannot start from another task's weights (init_from).")
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
        return fit_task(self, train_data, validation_data, output_dir, verbose, resume)

    # Inference and persistence -----------------------------------------------------------

    def evaluate(self, data=None, part: str = "test", **options) -> dict:
        """Metrics of the model on `data` (a path, DataFrame or what `read` returns), by default on the
        `part` ("test" or "validation") of the configured data (`data_parts`). Data whose parts need
        their context (a series, an interactions table) is cut by the split policy and its `part`
        scored (`evaluation_part`). `options` are the domain's (`metrics`)."""
        if part not in ("test", "validation"):
            raise ValueError(f"part must be 'test' or 'validation', got {part!r}.")
        if data is None:
            data = self.data_parts(self.config)[part]
            if data is None:
                raise ValueError(f"{self.domain}: no {part} data configured (data.{part} or a split); pass data.")
        else:
            data = self.evaluation_part(self.read(data, self.config), part)
        return self.metrics(data, **options)

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
            self.example_requests(),
        )
