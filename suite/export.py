"""SavedModel export in TF Serving's layout (`<export_dir>/<model>/<version>/`), and loading."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from suite.io import staged_directory, write_json_atomic, write_text_atomic

Endpoint = tuple[Callable, list]


def existing_versions(model_dir: str | Path) -> list[int]:
    """The integer versions already exported under `model_dir`, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def write_saved_model(
    endpoints: dict[str, Endpoint],
    resources: Iterable,
    export_dir: str | Path,
    model_name: str,
    version: int | None = None,
    examples: dict[str, dict] | None = None,
) -> Path:
    """Writes a SavedModel to `export_dir/model_name/version` and returns that path.

    `endpoints` maps signature names to `(fn, input_signature)`; one must be
    `serving_default`. `resources` are the Keras models and TF trackables (tokenizers,
    lookup tables) the endpoints use. `version` defaults to the next integer; an existing
    version is never overwritten, and the folder appears only once completely written.
    `examples` maps signature names to the columnar `inputs` of a REST `:predict` body (binary
    strings as `{"b64": ...}`); a signature without one takes `serving_default`'s where the input
    names agree. Beside the SavedModel, `signature.json` lists each signature's inputs and outputs
    and `serving_default`'s example request, and `assets.extra/tf_serving_warmup_requests` holds
    warm-up requests (`write_warmup_requests`) that TF Serving replays before it serves.
    """
    if "serving_default" not in endpoints:
        raise ValueError(f"endpoints must include 'serving_default', got {sorted(endpoints)}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model_name):
        raise ValueError(f"model_name must be letters, digits, '_', '.', '-', got {model_name!r}.")
    model_dir = Path(export_dir) / model_name
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive int, got {version!r}.")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"Version {version} of {model_name} already exists at {final}; versions are never overwritten.")
    with staged_directory(final) as staging:
        archive = keras.export.ExportArchive()
        for resource in resources:
            archive.track(resource)
        traced = {name: archive.add_endpoint(name, fn, signature) for name, (fn, signature) in endpoints.items()}
        archive.write_out(str(staging), verbose=False)
        examples = examples or {}
        write_json_atomic(staging / "signature.json",
                          describe_signatures(traced, model_name, examples.get("serving_default")))
        write_warmup_requests(staging / WARMUP_FILE, traced, model_name, examples)
    return final


WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
WARMUP_BATCH_SIZES = (1, 8)


def decode_inputs(inputs: dict, specs: dict) -> dict[str, np.ndarray]:
    """REST columnar `inputs` (binary strings as `{"b64": ...}`) as arrays of each input's dtype."""
    def plain(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return [plain(v) for v in value] if isinstance(value, list) else value

    return {name: np.asarray(plain(value), dtype=object if specs[name].dtype == tf.string
                             else specs[name].dtype.as_numpy_dtype) for name, value in inputs.items()}


def write_warmup_requests(path: Path, traced: dict, model_name: str, examples: dict[str, dict]) -> Path | None:
    """TF Serving's SavedModel warm-up file: a TFRecord of `PredictionLog`s, for every signature with
    an example (its own, or `serving_default`'s when the input names agree) one request of each of
    `WARMUP_BATCH_SIZES` rows (the example's first row repeated). None when no signature has one."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    logs = []
    for name, function in traced.items():
        specs = {spec.name: spec for spec in function.get_concrete_function().structured_input_signature[0]}
        example = examples.get(name, examples.get("serving_default"))
        if example is None or set(example) != set(specs):
            continue
        arrays = decode_inputs(example, specs)
        for rows in WARMUP_BATCH_SIZES:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for input_name, array in arrays.items():
                batch = np.repeat(array[:1], rows, axis=0)
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(batch, dtype=specs[input_name].dtype))
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    if not logs:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def _tensor_specs(structure) -> dict:
    return {
        name: {"dtype": spec.dtype.name, "shape": [None if d is None else int(d) for d in spec.shape]}
        for name, spec in structure.items()
    }


def describe_signatures(traced: dict, model_name: str, example_inputs: dict | None = None) -> dict:
    """Inputs, outputs and dtypes of each traced endpoint, plus a REST example request."""
    signatures = {}
    for name, function in traced.items():
        concrete = function.get_concrete_function()
        inputs = {spec.name: spec for spec in concrete.structured_input_signature[0]}
        signatures[name] = {"inputs": _tensor_specs(inputs), "outputs": _tensor_specs(concrete.structured_outputs)}
    description = {"model_name": model_name, "signatures": signatures}
    if example_inputs is not None:
        description["example_request"] = {
            "url": f"http://localhost:8501/v1/models/{model_name}:predict",
            "body": {"signature_name": "serving_default", "inputs": example_inputs},
        }
    return description


def serving_config(export_dir: str | Path) -> str:
    """The `model_config_list` text proto listing every model under `export_dir` that has at
    least one integer version, for `tensorflow_model_server --model_config_file`."""
    export_dir = Path(export_dir).resolve()
    models = sorted(p for p in export_dir.iterdir() if p.is_dir() and existing_versions(p)) if export_dir.is_dir() else []
    if not models:
        raise FileNotFoundError(f"No exported model (a folder with integer versions) under {export_dir}.")
    entries = "".join(
        f"  config {{\n    name: \"{model.name}\"\n    base_path: \"{model}\"\n    model_platform: \"tensorflow\"\n  }}\n"
        for model in models
    )
    return f"model_config_list {{\n{entries}}}\n"


# `--enable_batching --batching_parameters_file`: server-side batches of up to 64 rows, waiting at most
# 2 ms for a batch to fill, two batch threads (the cores of a small CPU server). Variable-length
# inputs are not padded (TF Serving would pad with each tensor's first element, a real item ID or
# pixel): requests batch together when their inputs agree beyond the batch dimension.
BATCHING_CONFIG = """max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
pad_variable_length_inputs: false
"""


def write_serving_config(export_dir: str | Path, path: str | Path | None = None) -> Path:
    """Writes `serving_config(export_dir)` to `path` (default `export_dir/models.config`) and
    `BATCHING_CONFIG` beside it as `batching.config`."""
    path = Path(path) if path is not None else Path(export_dir) / "models.config"
    write_text_atomic(path.parent / "batching.config", BATCHING_CONFIG)
    return write_text_atomic(path, serving_config(export_dir))


def load_saved_model(path: str | Path):
    """Loads an exported SavedModel (needs only TensorFlow and TF Text, never `suite`)."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    return tf.saved_model.load(str(path))


def describe_shape(shape: Sequence[int | None]) -> str:
    """`(batch, 96, 3)` for `(None, 96, 3)`: how an input's shape is named in errors."""
    return "(" + ", ".join("batch" if i == 0 and d is None else "any" if d is None else str(d)
                           for i, d in enumerate(shape)) + ")"


def shape_error(name: str, shape: Sequence[int | None], dtype: str, got) -> str:
    """The message for input `name` that is not shaped `shape`: the same words in the graph and in Python."""
    return f"input `{name}` must be {dtype} shaped {describe_shape(shape)}, got shape {got}"


NON_FINITE = "input `{name}` holds NaN or infinite values; every value must be finite"


def require(condition, message: str | tf.Tensor, *data):
    """In a serving function: fail the request with InvalidArgumentError `message` (followed by
    `data`) unless `condition`; TF Serving passes the message to the client. Returns the check."""
    return tf.debugging.Assert(condition, [message, *data], summarize=16)


def checked_input(tensor, name: str, shape: Sequence[int | None], finite: bool = False):
    """`tensor`, the serving input `name`, once its shape matches `shape` (None: any size) and, with
    `finite`, it holds no NaN or infinity; else the request fails naming the input.

    The shape is compared as text (`"1, 48, 3"` against `\\d+, 48, 3`): an input fed with another rank
    than its signature declares reaches the graph (TF Serving does not check), and a check on
    `tf.rank` or `tf.size(tf.shape(...))` would be folded away from the declared rank.
    """
    dims = tf.strings.reduce_join(tf.strings.as_string(tf.shape(tensor)), separator=", ")
    pattern = ", ".join(r"\d+" if size is None else str(size) for size in shape)
    message = tf.strings.join([shape_error(name, shape, tensor.dtype.name, "["), dims, "]"])
    with tf.control_dependencies([require(tf.strings.regex_full_match(dims, pattern), message)]):
        tensor = tf.identity(tensor)
    if finite:
        with tf.control_dependencies([require(tf.reduce_all(tf.math.is_finite(tensor)), NON_FINITE.format(name=name))]):
            tensor = tf.identity(tensor)
    return tensor


def check_array(array, name: str, shape: Sequence[int | None], dtype: str, finite: bool = False) -> None:
    """Python-side `checked_input`: the same conditions, a ValueError with the same words."""
    if array.ndim != len(shape) or any(size is not None and got != size for got, size in zip(array.shape, shape)):
        raise ValueError(shape_error(name, shape, dtype, list(array.shape)) + ".")
    if finite and not np.isfinite(array).all():
        raise ValueError(NON_FINITE.format(name=name) + ".")


def string_batch(values, name: str) -> list:
    """Python-side check of a string input `(batch,)`: one `str` or a flat sequence of `str`/`bytes`
    as a list; anything else is a ValueError in `checked_input`'s words."""
    if isinstance(values, (str, bytes)):
        return [values]
    values = list(values.numpy() if isinstance(values, tf.Tensor) else values)
    if not all(isinstance(value, (str, bytes)) for value in values):
        shape = list(np.shape(np.asarray(values, dtype=object)))
        raise ValueError(shape_error(name, (None,), "string", shape) + ", and every item a str or bytes.")
    return values
