"""gRPC serving: a `PredictRequest` built from `signature.json`, sent as bytes and answered from the
SavedModel in a process that imports only TensorFlow, TF Text and tensorflow-serving-api."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from suite.tasks import Forecaster, TextClassifier

predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason="needs tensorflow-serving-api")

ROOT = pathlib.Path(__file__).resolve().parents[1]

TEXT = {
    "vocabulary_size": 200,
    "bucket_lengths": [8, 16],
    "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "dropout": 0.0, "max_length": 16},
}
FORECAST = {
    "lookback": 48,
    "horizon": 12,
    "patch_length": 8,
    "patch_stride": 8,
    "data": {"split": [0.7, 0.1, 0.2]},
    "backbone": {"num_layers": 1, "d_model": 16, "num_heads": 2, "ff_dim": 32, "dropout": 0.0, "max_length": 16},
}
SERIES = pd.read_csv(ROOT / "data/forecasting/sample.csv").drop(columns="date").to_numpy("float32")
WINDOWS = np.stack([SERIES[-48:], SERIES[100:148]])  # two real windows: (2, lookback, channels)

# For each export: a request from signature.json (its example, or the given inputs), received as
# TF Serving would (serialized bytes) and answered; the response bytes are written beside it.
SERVE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import query_saved_model as q
    from tensorflow_serving.apis import predict_pb2
    for export, inputs in json.loads(sys.argv[2]).items():
        wire = q.grpc_request(f"{export}/signature.json", inputs).SerializeToString()
        response = q.grpc_answer(export, predict_pb2.PredictRequest.FromString(wire))
        open(f"{export}/response.pb", "wb").write(response.SerializeToString())
    assert not any(name == "suite" or name.startswith("suite.") for name in sys.modules), "imported suite"
    """
)


def untrained(task_class, data, config):
    """A task with its preprocessing fitted on `data` and a freshly initialised model (serving
    must reproduce `predict` whatever the weights; training would only cost time)."""
    config = task_class.resolve_config(config)
    return task_class.create(task_class.read(data, config), config)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two tiny tasks (text strings in, float windows in), exported and answered over 'gRPC'."""
    folder = tmp_path_factory.mktemp("grpc")
    tasks = {
        "text": untrained(TextClassifier, ROOT / "data/text_classification/train.csv", TEXT),
        "forecast": untrained(Forecaster, ROOT / "data/forecasting/sample.csv", FORECAST),
    }
    exports = {name: task.export(folder, model_name=name) for name, task in tasks.items()}
    requests = {str(exports["text"]): None, str(exports["forecast"]): {"window": WINDOWS.tolist()}}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", SERVE, str(ROOT / "tasks"), json.dumps(requests)],
                   check=True, env=env, cwd=folder)
    return {
        name: (task, json.loads((exports[name] / "signature.json").read_text()),
               predict_pb2.PredictResponse.FromString((exports[name] / "response.pb").read_bytes()))
        for name, task in tasks.items()
    }


def outputs_match_the_signature(description: dict, response, batch: int) -> dict:
    """The response's outputs as arrays, after checking names, dtypes and shapes against signature.json."""
    specs = description["signatures"]["serving_default"]["outputs"]
    assert response.model_spec.name == description["model_name"]
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == set(specs)
    arrays = {}
    for name, spec in specs.items():
        proto = response.outputs[name]
        assert tf.dtypes.as_dtype(proto.dtype).name == spec["dtype"], name
        shape = [dim.size for dim in proto.tensor_shape.dim]
        assert shape == [batch, *spec["shape"][1:]], name
        arrays[name] = tf.make_ndarray(proto)
    return arrays


def test_text_request_is_answered_as_the_task_predicts(served):
    task, description, response = served["text"]
    texts = description["example_request"]["body"]["inputs"]["text"]
    outputs = outputs_match_the_signature(description, response, batch=len(texts))
    expected = task.predict(texts)
    assert [label.decode() for label in outputs["label"]] == list(expected["label"])
    np.testing.assert_array_equal(outputs["class_id"], expected["class_id"])
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-5)


def test_forecast_request_is_answered_as_the_task_predicts(served):
    task, description, response = served["forecast"]
    outputs = outputs_match_the_signature(description, response, batch=len(WINDOWS))
    assert outputs["forecast"].shape == (2, 12, 3)
    for window, forecast in zip(WINDOWS, outputs["forecast"]):
        expected = task.predict(window)[task.preprocessor.columns].to_numpy()
        np.testing.assert_allclose(forecast, expected, rtol=1e-4, atol=1e-3)
    assert np.ptp(outputs["forecast"], axis=1).min() > 0  # a real forecast, not a constant


def test_request_protos_take_the_signature_dtypes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tasks"))
    from query_saved_model import grpc_request

    description = {
        "model_name": "recommendation",
        "signatures": {"serving_default": {
            "inputs": {"history": {"dtype": "string", "shape": [None, None]}, "k": {"dtype": "int32", "shape": [None]}},
            "outputs": {},
        }},
    }
    path = tmp_path / "signature.json"
    path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match="pass `inputs`"):
        grpc_request(path)
    request = grpc_request(path, {"history": [["i011", "i012"], ["i295", ""]], "k": [5, 5]})
    assert (request.model_spec.name, request.model_spec.signature_name) == ("recommendation", "serving_default")
    history, k = (tf.make_ndarray(request.inputs[name]) for name in ("history", "k"))
    assert request.inputs["history"].dtype == tf.string.as_datatype_enum and history.shape == (2, 2)
    assert request.inputs["k"].dtype == tf.int32.as_datatype_enum and k.shape == (2,) and (k == 5).all()
