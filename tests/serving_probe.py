"""Run in a fresh process with only TensorFlow, TF Text and tensorflow-serving-api imported:
`python serving_probe.py EXPORT CASES_FILE` (a JSON list) prints one JSON object.

- `cases`: each `{"signature", "inputs": {name: {"value", "dtype"}}}` is served by the TF2 loader;
  the answer is `{"ok": true, "finite": bool, "rows": n}` or `{"ok": false, "error": message}`.
- `session`: every SignatureDef run the way TF Serving's C++ server runs it, in a TF1
  `Session` by tensor name, on the export's warm-up requests, each answer turned into TF Serving
  REST JSON (`json.dumps(..., allow_nan=False)`); `warmup` counts the requests replayed.
"""

import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops)
from tensorflow_serving.apis import prediction_log_pb2


def plain(value):
    """JSON-ready: bytes as text (TF Serving's REST API sends strings), lists element by element."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return [plain(v) for v in value] if isinstance(value, list) else value


def to_bytes(value):
    if isinstance(value, str):
        return value.encode("latin-1")
    return [to_bytes(v) for v in value] if isinstance(value, list) else value


def serve(model, case) -> dict:
    try:
        inputs = {}
        for name, spec in case["inputs"].items():
            array = np.asarray(to_bytes(spec["value"]), dtype=object if spec["dtype"] == "string" else spec["dtype"])
            inputs[name] = tf.constant(array.reshape(spec["shape"]) if "shape" in spec else array)
        outputs = model.signatures[case["signature"]](**inputs)
    except Exception as error:  # noqa: BLE001  (a refused request: its message is the result)
        return {"ok": False, "error": str(error)}
    numeric = [v.numpy() for v in outputs.values() if v.dtype.is_floating]
    rows = {int(v.shape[0]) for v in outputs.values()}
    return {"ok": True, "finite": all(np.isfinite(v).all() for v in numeric), "rows": sorted(rows)}


def session_replay(path: str) -> dict:
    """Warm-up requests through `tf.compat.v1.Session` and the SignatureDefs, answers as REST JSON."""
    answers, signatures = [], set()
    records = list(tf.data.TFRecordDataset(f"{path}/assets.extra/tf_serving_warmup_requests").as_numpy_iterator())
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        for record in records:
            request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            signature = meta_graph.signature_def[request.model_spec.signature_name]
            feed = {signature.inputs[name].name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            fetched = session.run({name: info.name for name, info in signature.outputs.items()}, feed)
            rows = len(next(iter(fetched.values())))
            body = {"predictions": [{name: plain(np.asarray(value[i]).tolist()) for name, value in fetched.items()}
                                    for i in range(rows)]}
            answers.append(json.dumps(body, allow_nan=False))
            signatures.add(request.model_spec.signature_name)
        every = sorted(name for name in meta_graph.signature_def if not name.startswith("__"))
    return {"warmup": len(answers), "signatures_replayed": sorted(signatures), "signatures": every}


def main(path: str, cases_file: str) -> None:
    model = tf.saved_model.load(path)
    with open(cases_file, encoding="utf-8") as file:
        cases = json.load(file)
    result = {"cases": [serve(model, case) for case in cases], **session_replay(path)}
    result["suite_imported"] = any(name == "suite" or name.startswith("suite.") for name in sys.modules)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
