"""Answer a TF Serving REST-style request from an exported SavedModel, importing only TensorFlow.

    python tasks/query_saved_model.py saved_models/text_classification/1 \
        '{"signature_name": "serving_default", "inputs": {"text": ["a fine film"]}}'

The request has the columnar `:predict` body (`inputs` maps input names to lists; binary
strings as `{"b64": ...}`); the reply is `{"outputs": {...}}` as TF Serving would send it.
This script never imports `suite`: it checks that an export stands alone.
"""

import base64
import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops used by text exports)


def _decode(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _plain(tensor: tf.Tensor):
    array = tensor.numpy()
    return np.char.decode(array.astype(bytes), "utf-8").tolist() if tensor.dtype == tf.string else array.tolist()


def answer(path: str, request: dict) -> dict:
    model = tf.saved_model.load(path)
    signature = model.signatures[request.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    inputs = {name: tf.constant(_decode(value), dtype=specs[name].dtype) for name, value in request["inputs"].items()}
    return {"outputs": {name: _plain(tensor) for name, tensor in signature(**inputs).items()}}


if __name__ == "__main__":
    print(json.dumps(answer(sys.argv[1], json.loads(sys.argv[2])), ensure_ascii=False))
