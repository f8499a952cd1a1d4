"""The serving boundary: every export refuses bad requests with a message naming the input, never
answers with NaN or infinity, runs through TF Serving's SignatureDef path with its warm-up requests,
and answers concurrent callers as it answers one; `predict` refuses the same inputs in the same words."""

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_export_ops import DOMAINS

from suite.export import BATCHING_CONFIG, write_serving_config

PROBE = Path(__file__).with_name("serving_probe.py")
PNG = tf.io.encode_png(np.full((8, 8, 1), 200, np.uint8)).numpy()


def text(name, value, dtype="string", shape=None):
    return {name: {"value": value, "dtype": dtype, **({} if shape is None else {"shape": shape})}}


def as_latin1(data: bytes) -> str:
    """Bytes through JSON: the probe encodes every string back to bytes as latin-1."""
    return data.decode("latin-1")


def case(signature, inputs, refused_naming=None, refused_with=None):
    """A request; refused ones fail with a message that names the input (or says `refused_with`)."""
    refused = f"`{refused_naming}`" if refused_naming else refused_with
    return {"signature": signature, "inputs": inputs, "refused": refused}


def string_cases(name: str, signature: str = "serving_default") -> list[dict]:
    return [
        case(signature, text(name, [])),
        case(signature, text(name, ["", "ok"])),
        case(signature, text(name, [as_latin1(b"caf\xe9 \xff\xfe")])),
        case(signature, text(name, [as_latin1(("a man rides 😀 北京 مرحبا " * 4000).encode())])),
        case(signature, text(name, ["a dog runs"] * 1000)),
        case(signature, text(name, [["a", "b"]]), refused_naming=name),
        case(signature, text(name, "just one"), refused_naming=name),
        # The dtype is checked by TensorFlow before the graph runs; its message names both dtypes.
        case(signature, text(name, [1, 2], "int32"), refused_with="expected to be a string tensor but is a int32"),
    ]


CASES = {
    "text_classification": string_cases("text") + string_cases("text", "embed")[5:7],
    "translation": string_cases("source"),
    "image_classification": [
        case("serving_default", text("image_bytes", [as_latin1(PNG)] * 3)),
        case("serving_default", text("image_bytes", [])),
        case("serving_default", text("image_bytes", [as_latin1(PNG), "not an image"]), refused_naming="image_bytes"),
        case("serving_default", text("image_bytes", [as_latin1(PNG[:-20])]), refused_naming="image_bytes"),
        case("serving_default", text("image_bytes", ["", "xx"]), refused_naming="image_bytes"),
        case("serving_default", text("image_bytes", [[as_latin1(PNG)]]), refused_naming="image_bytes"),
        case("predict_images", text("images", np.zeros((1000, 8, 8, 1)).tolist(), "float32")),
        case("predict_images", text("images", np.full((1, 8, 8, 3), np.nan).tolist(), "float32"), refused_naming="images"),
        case("predict_images", text("images", np.zeros((1, 8, 8, 5)).tolist(), "float32"), refused_naming="images"),
        case("predict_images", text("images", np.zeros((8, 8, 1)).tolist(), "float32"), refused_naming="images"),
        case("predict_images_uint8", text("images", np.zeros((2, 30, 20, 4), np.uint8).tolist(), "uint8")),
    ],
    "forecasting": [
        case("serving_default", text("window", np.ones((2, 48, 3)).tolist(), "float32")),
        case("serving_default", text("window", [], "float32", [0, 48, 3])),
        case("serving_default", text("window", np.ones((1000, 48, 3)).tolist(), "float32")),
        case("serving_default", text("window", np.ones((1, 50, 3)).tolist(), "float32"), refused_naming="window"),
        case("serving_default", text("window", np.ones((48, 3)).tolist(), "float32"), refused_naming="window"),
        case("serving_default", text("window", np.full((1, 48, 3), np.nan).tolist(), "float32"), refused_naming="window"),
        case("serving_default", text("window", np.full((1, 48, 3), np.inf).tolist(), "float32"), refused_naming="window"),
        case("serving_default", text("window", np.full((1, 48, 3), 3e38).tolist(), "float32"), refused_naming="window"),
    ],
    "recommendation": [
        case("serving_default", {**text("history", [["i011", "i012"], ["", ""]]), **text("k", [3, 1000], "int32")}),
        case("serving_default", {**text("history", [["i011"]]), **text("k", [0], "int32")}),
        case("serving_default", {**text("history", [], "string", [0, 3]), **text("k", [], "int32")}),
        case("serving_default", {**text("history", [["x"] * 500] * 1000), **text("k", [5] * 1000, "int32")}),
        case("serving_default", {**text("history", [["i011"]]), **text("k", [-1], "int32")}, refused_naming="k"),
        case("serving_default", {**text("history", [["i011"]]), **text("k", 5, "int32")}, refused_naming="k"),
        case("serving_default", {**text("history", [["i011"]]), **text("k", [5, 5], "int32")}, refused_naming="k"),
        case("serving_default", {**text("history", ["i011"]), **text("k", [5], "int32")}, refused_naming="history"),
    ],
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = Path(__file__).resolve().parents[1]
    folder, paths, tasks = tmp_path_factory.mktemp("exports"), {}, {}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for domain, (task_class, data, config) in DOMAINS.items():
            config = task_class.resolve_config(config)
            tasks[domain] = task_class.create(task_class.read(data(), config), config)
            paths[domain] = tasks[domain].export(folder)
    finally:
        os.chdir(cwd)
    return paths, tasks


@pytest.mark.parametrize("domain", sorted(CASES))
def test_bad_requests_are_refused_naming_the_input_and_answers_are_finite(domain, exports, tmp_path):
    path, cases = exports[0][domain], tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES[domain]), encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, str(PROBE), str(path), str(cases)],
                               capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["suite_imported"] is False
    for spec, answer in zip(CASES[domain], result["cases"]):
        shown = {name: str(value["value"])[:60] for name, value in spec["inputs"].items()}
        if spec["refused"]:
            assert not answer["ok"] and spec["refused"] in answer["error"], (shown, answer)
        else:
            assert answer["ok"] and answer["finite"], (shown, answer)
    # TF Serving's own path: every SignatureDef in a TF1 Session, on the warm-up requests, as REST JSON.
    assert result["signatures_replayed"] == result["signatures"] and result["warmup"] == 2 * len(result["signatures"])


def test_recommendation_rows_past_k_or_the_catalogue_hold_empty_ids_and_zero_scores(exports):
    served = tf.saved_model.load(str(exports[0]["recommendation"])).signatures["serving_default"]
    out = served(history=tf.constant([["i011", "i012"], ["i011", ""]]), k=tf.constant([2, 10000]))
    ids, scores = out["item_ids"].numpy().astype(str), out["scores"].numpy()
    catalogue = len(exports[1]["recommendation"].preprocessor.vocabulary) - 2
    assert ids.shape == (2, catalogue) and np.isfinite(scores).all()
    assert (ids[0, 2:] == "").all() and (scores[0, 2:] == 0).all() and (ids[0, :2] != "").all()
    assert (ids[1] == "").sum() == 1  # the one item of its history is excluded


def test_predict_refuses_what_the_export_refuses_in_the_same_words(exports):
    forecaster, recommender = exports[1]["forecasting"], exports[1]["recommendation"]
    with pytest.raises(ValueError, match=r"input `window` must be float32 shaped \(batch, 48, 3\), got shape \[1, 50, 3\]"):
        forecaster.forecast(np.ones((1, 50, 3)))
    with pytest.raises(ValueError, match="input `window` holds NaN or infinite values"):
        forecaster.forecast(np.full((1, 48, 3), np.nan))
    with pytest.raises(ValueError, match=r"input `k` must be >= 0 .* got -1"):
        recommender.recommend([["i011"]], k=-1)
    with pytest.raises(ValueError, match=r"input `text` must be string shaped \(batch\), got shape \[1, 2\]"):
        exports[1]["text_classification"].predict([["a", "b"]])
    with pytest.raises(ValueError, match=r"input `images`: these items are not complete PNG, .* \[1\]\.$"):
        exports[1]["image_classification"].predict([PNG, b"xx"])
    served = tf.saved_model.load(str(exports[0]["forecasting"])).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `window` must be float32 shaped \(batch, 48, 3\), got shape \[1, 50, 3\]"):
        served(window=tf.ones((1, 50, 3)))


def test_one_export_answers_eight_threads_as_it_answers_one(exports):
    served = tf.saved_model.load(str(exports[0]["text_classification"])).signatures["serving_default"]
    texts = [[f"a film number {i}", "", "flat and tedious " * (i % 7)] for i in range(240)]
    serial = [served(text=tf.constant(batch))["probabilities"].numpy() for batch in texts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda batch: served(text=tf.constant(batch))["probabilities"].numpy(), texts))
    for one, many in zip(serial, parallel):
        np.testing.assert_allclose(many, one, atol=1e-6)


def test_serving_config_writes_the_batching_parameters_beside_models_config(exports):
    models_config = write_serving_config(exports[0]["forecasting"].parents[1])
    batching = models_config.with_name("batching.config")
    assert batching.read_text() == BATCHING_CONFIG and "max_batch_size { value: 64 }" in BATCHING_CONFIG


def test_bench_serving_times_two_exports_side_by_side(exports):
    text = str(exports[0]["text_classification"])
    command = [sys.executable, str(PROBE.parents[1] / "benchmarks" / "bench_serving.py"), "--export", f"a={text}",
               "--export", f"b={text}", "--rounds", "2", "--calls", "2", "--warmup", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=PROBE.parents[1], timeout=600,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["suite_imported"] is False
    assert set(report["results"]) == {"a/batch_1", "a/batch_64", "b/batch_1", "b/batch_64"}
    assert report["results"]["b/batch_64"]["same_answers_as_reference"] is True
    assert report["results"]["b/batch_1"]["time_vs_a"] > 0
