"""`suite bench <domain>`: the speed of a task config, domain-generic, as one JSON-ready dict.

Quality benchmarks live in `benchmarks/` (repository scripts); this is the installed speed
check. It builds an untrained task through the `Task` hooks (`read`, `create`, `dataset`,
`compile`) and measures, after a warm-up that compiles every input shape (timed apart):

- training: the XLA-compiled train step (`train_on_batch`) over `steps` batches of the
  training dataset, read into memory first so the input pipeline is not timed;
- inference: the XLA-compiled forward pass (`inference_function`) over `steps` batches of the
  evaluation dataset (for translation, the teacher-forced decoder);
- serving: the exported SavedModel, loaded back with `tf.saved_model.load`, answering
  `serving_default` requests built from `example_inputs()` at batch 1 and 64, `steps` calls each.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from suite.config import to_dict
from suite.core.inference import inference_function
from suite.core.task import Task
from suite.export import decode_inputs, load_saved_model

SERVING_BATCH_SIZES = (1, 64)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stopwatch:
    """Wall-clock and process CPU seconds of a `with` block (`.wall`, `.cpu`)."""

    def __enter__(self) -> "Stopwatch":
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = cpu_seconds() - self.cpu


def machine_info() -> dict:
    """CPU count, load average, accelerators and library versions."""
    return {
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _in_memory_batches(dataset: tf.data.Dataset, count: int) -> list[tuple]:
    """`count` batches of `dataset` (repeated as needed) as `(x, y, sample_weight)` tensors."""
    return [keras.utils.unpack_x_y_sample_weight(batch) for batch in dataset.repeat().take(count)]


def _shapes(structure) -> tuple:
    return tuple(tuple(leaf.shape) for leaf in keras.tree.flatten(structure) if hasattr(leaf, "shape"))


def _batch_size(structure) -> int:
    """Rows of a batch: the leading dimension of its first tensor of rank >= 1."""
    return next(shape[0] for shape in _shapes(structure) if shape)


def throughput(call: Callable, inputs: list) -> dict:
    """Examples/s and calls/s of `call` over `inputs`; `call` must block until its result is ready.

    First `call` runs once per distinct input shape (warm-up: tracing and XLA compilation),
    timed apart as `warmup_seconds`.
    """
    warmups = {}
    for item in inputs:
        warmups.setdefault(_shapes(item), item)
    with Stopwatch() as warmup:
        for item in warmups.values():
            call(item)
    examples = sum(_batch_size(item) for item in inputs)
    with Stopwatch() as timed:
        for item in inputs:
            call(item)
    return {
        "examples_per_s": round(examples / timed.wall, 2),
        "steps_per_s": round(len(inputs) / timed.wall, 3),
        "steps": len(inputs),
        "examples": examples,
        "seconds": round(timed.wall, 4),
        "cpu_seconds": round(timed.cpu, 4),
        "warmup_seconds": round(warmup.wall, 4),
        "warmup_shapes": len(warmups),
    }


def _request(example: dict, specs: dict, batch_size: int) -> dict[str, tf.Tensor]:
    """A REST `inputs` example as tensors of `specs`, its rows cycled to `batch_size`."""
    arrays = decode_inputs(example, specs)
    return {name: tf.constant(np.take(array, np.arange(batch_size) % len(array), axis=0) if array.ndim else array,
                              dtype=specs[name].dtype) for name, array in arrays.items()}


def serving_throughput(task: Task, steps: int, batch_sizes=SERVING_BATCH_SIZES) -> dict:
    """Export to a temporary folder, load back, time `serving_default` at each batch size."""
    example = task.example_inputs()
    figures = {}
    with tempfile.TemporaryDirectory() as export_dir:
        with Stopwatch() as export:
            path = task.export(export_dir)
        with Stopwatch() as load:
            signature = load_saved_model(path).signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        missing = sorted(set(specs) - set(example))
        if missing:
            raise ValueError(f"{type(task).__name__}.example_inputs() lacks the serving inputs {missing}.")
        figures["inputs"] = sorted(specs)
        figures["export_seconds"] = round(export.wall, 3)
        figures["load_seconds"] = round(load.wall, 3)

        def call(request):
            return keras.tree.map_structure(np.asarray, signature(**request))

        for size in batch_sizes:
            request = _request({name: example[name] for name in specs}, specs, size)
            figures[f"batch_{size}"] = throughput(call, [request] * steps)
    return figures


def benchmark(task_class: type[Task], config, data=None, steps: int = 20, source=None, overrides=None) -> dict:
    """Speed figures of `task_class` built from `config` on `data`.

    `data` defaults to the config's `data.train`; its training part (`Task.data_parts`) is used.
    `source` and `overrides` are only reported.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")

    def log(message: str) -> None:
        print(f"suite bench {task_class.domain}: {message}", file=sys.stderr, flush=True)

    result = {"benchmark": f"suite bench {task_class.domain}", "machine": machine_info()}
    with Stopwatch() as total:
        keras.utils.set_random_seed(config.training.seed)
        data = config.data.train if data is None else data
        if data is None:
            raise ValueError(f"suite bench {task_class.domain}: no data: the config's data.train is empty; "
                             f"pass `--data PATH`.")
        with Stopwatch() as build:
            rows = task_class.data_parts(config, data)["train"]
            task = task_class.create(rows, config)
        result["config"] = {
            "domain": task_class.domain,
            "source": None if source is None else str(source),
            "overrides": overrides or {},
            "data": None if data is None else str(data),
            "data_config": to_dict(task.config.data),
            "rows_read": len(rows),
            "parameters": task.model.count_params(),
            "build_seconds": round(build.wall, 3),
            "backbone": to_dict(task.config.backbone),
            "training": to_dict(task.config.training),
        }
        log(f"{task.model.count_params():,} parameters; training {steps} steps")
        train_batches = _in_memory_batches(task.dataset(rows, training=True), steps)
        task.compile(total_steps=2 * steps)  # covers the warm-up steps (at most one per batch) too
        result["training"] = throughput(lambda batch: task.model.train_on_batch(*batch), train_batches)

        log(f"inference, {steps} batches")
        forward = inference_function(task.model, jit_compile=True)
        eval_inputs = [x for x, _, _ in _in_memory_batches(task.dataset(rows), steps)]
        result["inference"] = throughput(lambda x: keras.tree.map_structure(np.asarray, forward(x)), eval_inputs)

        log(f"serving the exported SavedModel, {steps} calls at batch {' and '.join(map(str, SERVING_BATCH_SIZES))}")
        result["serving"] = serving_throughput(task, steps)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_seconds"] = round(total.wall, 2)
    result["cpu_seconds"] = round(total.cpu, 2)
    return result
