"""SavedModel export in TF Serving's layout (`<export_dir>/<model>/<version>/`), and loading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import keras

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
    example_inputs: dict | None = None,
) -> Path:
    """Writes a SavedModel to `export_dir/model_name/version` and returns that path.

    `endpoints` maps signature names to `(fn, input_signature)`; one must be
    `serving_default`. `resources` are the Keras models and TF trackables (tokenizers,
    lookup tables) the endpoints use. `version` defaults to the next integer; an existing
    version is never overwritten, and the folder appears only once completely written.
    Beside the SavedModel, `signature.json` lists each signature's inputs and outputs and,
    given `example_inputs` (the columnar `inputs` of a REST `:predict` body for
    `serving_default`), an example request.
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
        write_json_atomic(staging / "signature.json", describe_signatures(traced, model_name, example_inputs))
    return final


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


def write_serving_config(export_dir: str | Path, path: str | Path | None = None) -> Path:
    """Writes `serving_config(export_dir)` to `path` (default `export_dir/models.config`)."""
    path = Path(path) if path is not None else Path(export_dir) / "models.config"
    return write_text_atomic(path, serving_config(export_dir))


def load_saved_model(path: str | Path):
    """Loads an exported SavedModel (needs only TensorFlow and TF Text, never `suite`)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    return tf.saved_model.load(str(path))
