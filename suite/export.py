"""SavedModel export in TF Serving's layout (`<export_dir>/<model>/<version>/`), and loading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import keras

from suite.io import staged_directory

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
) -> Path:
    """Writes a SavedModel to `export_dir/model_name/version` and returns that path.

    `endpoints` maps signature names to `(fn, input_signature)`; one must be
    `serving_default`. `resources` are the Keras models and TF trackables (tokenizers,
    lookup tables) the endpoints use. `version` defaults to the next integer; an existing
    version is never overwritten, and the folder appears only once completely written.
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
        for name, (fn, signature) in endpoints.items():
            archive.add_endpoint(name, fn, signature)
        archive.write_out(str(staging), verbose=False)
    return final


def load_saved_model(path: str | Path):
    """Loads an exported SavedModel (needs only TensorFlow and TF Text, never `suite`)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    return tf.saved_model.load(str(path))
