"""SavedModel export layout: integer versions, never overwritten or half-written, signature.json, models.config."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from suite.cli import main
from suite.export import WARMUP_FILE, existing_versions, load_saved_model, serving_config, write_saved_model


@pytest.fixture(scope="module")
def doubler():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="ones", name="dense")])

    def serve(x):
        return {"y": model(x, training=False)}

    return model, {"serving_default": (serve, [tf.TensorSpec([None, 3], tf.float32, name="x")])}


def test_versions_count_up_and_are_never_overwritten(doubler, tmp_path):
    model, endpoints = doubler
    paths = [write_saved_model(endpoints, [model], tmp_path, "doubler") for _ in range(2)]
    assert [p.name for p in paths] == ["1", "2"]
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_saved_model(endpoints, [model], tmp_path, "doubler", version=1)
    assert write_saved_model(endpoints, [model], tmp_path, "doubler", version=7).name == "7"
    assert existing_versions(tmp_path / "doubler") == [1, 2, 7]
    served = load_saved_model(paths[0]).signatures["serving_default"](x=tf.ones((1, 3)))
    np.testing.assert_allclose(served["y"], [[3.0, 3.0]])


def test_a_failed_export_leaves_nothing_behind(doubler, tmp_path):
    model, _ = doubler

    def broken(x):
        raise RuntimeError("tracing failed")

    with pytest.raises(RuntimeError, match="tracing failed"):
        write_saved_model({"serving_default": (broken, [tf.TensorSpec([None, 3])])}, [model], tmp_path, "doubler")
    assert list((tmp_path / "doubler").iterdir()) == []


def test_bad_names_and_versions_are_refused(doubler, tmp_path):
    model, endpoints = doubler
    with pytest.raises(ValueError, match="serving_default"):
        write_saved_model({"other": endpoints["serving_default"]}, [model], tmp_path, "doubler")
    with pytest.raises(ValueError, match="model_name"):
        write_saved_model(endpoints, [model], tmp_path, "../escape")
    with pytest.raises(ValueError, match="version"):
        write_saved_model(endpoints, [model], tmp_path, "doubler", version=0)


def test_signature_json_describes_inputs_outputs_and_an_example(doubler, tmp_path):
    model, endpoints = doubler
    path = write_saved_model(endpoints, [model], tmp_path, "doubler", examples={"serving_default": {"x": [[1.0, 2.0, 3.0]]}})
    description = json.loads((path / "signature.json").read_text())
    assert description["signatures"]["serving_default"] == {
        "inputs": {"x": {"dtype": "float32", "shape": [None, 3]}},
        "outputs": {"y": {"dtype": "float32", "shape": [None, 2]}},
    }
    assert description["example_request"] == {
        "url": "http://localhost:8501/v1/models/doubler:predict",
        "body": {"signature_name": "serving_default", "inputs": {"x": [[1.0, 2.0, 3.0]]}},
    }


def test_models_config_lists_every_exported_model(doubler, tmp_path, capsys):
    model, endpoints = doubler
    with pytest.raises(FileNotFoundError, match="No exported model"):
        serving_config(tmp_path)
    for name in ("b_model", "a_model"):
        write_saved_model(endpoints, [model], tmp_path, name)
    (tmp_path / "not_a_model").mkdir()
    assert main(["serving-config", "--export-dir", str(tmp_path)]) == 0
    written = json.loads(capsys.readouterr().out)["models_config"]
    text = (tmp_path / "models.config").read_text()
    assert written == str(tmp_path / "models.config")
    assert text == (
        "model_config_list {\n"
        f'  config {{\n    name: "a_model"\n    base_path: "{tmp_path.resolve() / "a_model"}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        f'  config {{\n    name: "b_model"\n    base_path: "{tmp_path.resolve() / "b_model"}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        "}\n"
    )


def test_warmup_requests_hold_the_example_at_batch_one_and_eight(doubler, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    model, endpoints = doubler
    path = write_saved_model(endpoints, [model], tmp_path, "doubler", examples={"serving_default": {"x": [[1.0, 2.0, 3.0]]}})
    records = tf.data.TFRecordDataset(str(path / WARMUP_FILE)).as_numpy_iterator()
    requests = [prediction_log_pb2.PredictionLog.FromString(record).predict_log.request for record in records]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 2
    batches = [tf.make_ndarray(r.inputs["x"]) for r in requests]
    assert [b.shape for b in batches] == [(1, 3), (8, 3)] and (batches[1] == [1.0, 2.0, 3.0]).all()
    assert not (write_saved_model(endpoints, [model], tmp_path, "plain") / WARMUP_FILE).exists()
