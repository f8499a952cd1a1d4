"""Answer a TF Serving REST or gRPC request from an exported SavedModel, importing only TensorFlow.

    python tasks/query_saved_model.py saved_models/text_classification/1 \
        '{"signature_name": "serving_default", "inputs": {"text": ["a fine film"]}}'

The request has the columnar `:predict` body (`inputs` maps input names to lists; binary
strings as `{"b64": ...}`); the reply is `{"outputs": {...}}` as TF Serving would send it.
`grpc_request` and `grpc_answer` do the same with the gRPC `PredictRequest` / `PredictResponse`
protos (`pip install tensorflow-serving-api`). `semantic_search` ranks
documents against a query with a sentence encoder's `embed` signature:

    python tasks/query_saved_model.py --search saved_models/sentence_encoder/1 "a dog in the snow" \
        "Two dogs play in the snow." "A man cooks dinner." "A puppy runs through a snowy field."

This script never imports `suite`: it checks that an export stands alone.
"""

import base64
import json
import os
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


def grpc_request(signature_json: str | os.PathLike, inputs: dict | None = None):
    """A `PredictRequest` for the export described by `signature_json` (its `signature.json`).

    `inputs` are REST-style columnar inputs (default: the file's example request); each
    becomes a TensorProto of the dtype the signature declares.
    """
    from tensorflow_serving.apis import predict_pb2

    with open(signature_json, encoding="utf-8") as file:
        description = json.load(file)
    body = description.get("example_request", {}).get("body", {})
    signature_name = body.get("signature_name", "serving_default")
    inputs = body.get("inputs") if inputs is None else inputs
    if inputs is None:
        raise ValueError(f"{signature_json} has no example request; pass `inputs`.")
    specs = description["signatures"][signature_name]["inputs"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = description["model_name"]
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(_decode(value), dtype=tf.as_dtype(specs[name]["dtype"])))
    return request


def grpc_answer(saved_model, request):
    """The `PredictResponse` TF Serving would send for `request` (a `PredictRequest`);
    `saved_model` is a loaded SavedModel or its path."""
    from tensorflow_serving.apis import predict_pb2

    if isinstance(saved_model, (str, os.PathLike)):
        saved_model = tf.saved_model.load(str(saved_model))
    signature = saved_model.signatures[request.model_spec.signature_name or "serving_default"]
    outputs = signature(**{name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()})
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name in request.output_filter or outputs:
        response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name].numpy()))
    return response


def semantic_search(saved_model, query: str, documents: list[str], k: int = 3) -> list[dict]:
    """The `k` documents most similar to `query` (cosine of the `embed` signature's vectors), best first."""
    if isinstance(saved_model, (str, os.PathLike)):
        saved_model = tf.saved_model.load(str(saved_model))
    embed = saved_model.signatures["embed"]
    vectors = tf.math.l2_normalize(embed(text=tf.constant([query, *documents]))["embedding"], axis=-1).numpy()
    scores = vectors[1:] @ vectors[0]
    return [{"document": documents[i], "score": round(float(scores[i]), 4)} for i in np.argsort(-scores)[:k]]


if __name__ == "__main__":
    if sys.argv[1] == "--search":
        print(json.dumps(semantic_search(sys.argv[2], sys.argv[3], sys.argv[4:]), ensure_ascii=False, indent=2))
    else:
        print(json.dumps(answer(sys.argv[1], json.loads(sys.argv[2])), ensure_ascii=False))
