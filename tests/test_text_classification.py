"""TextClassifier and MaskedLMPretrainer: config errors, learning, pooling, save/load, export, CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import suite
from suite.cli import main
from suite.config import ConfigError
from suite.layers import SequencePooling
from suite.tasks import MaskedLMPretrainer, TextClassifier
from suite.text.masked_lm import masked_positions

TINY = {
    "vocabulary_size": 200,
    "bucket_lengths": [8, 16],
    "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "dropout": 0.0, "max_length": 16},
    "training": {"epochs": 6, "batch_size": 16, "learning_rate": 0.003, "warmup_fraction": 0.0},
}
GOOD = ["a great and wonderful film", "i loved it , wonderful", "great acting , great story", "wonderful !"]
BAD = ["a terrible and boring film", "i hated it , boring", "terrible acting , awful story", "boring ."]


def obvious_classes(repeats: int = 12) -> pd.DataFrame:
    texts = (GOOD + BAD) * repeats
    labels = (["pos"] * len(GOOD) + ["neg"] * len(BAD)) * repeats
    return pd.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier.train(obvious_classes(), TINY, verbose=0)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="backbone.num_layer"):
        TextClassifier.resolve_config({"backbone": {"num_layer": 2}})
    with pytest.raises(ConfigError, match="training.epochs: expected int"):
        TextClassifier.resolve_config(None, {"epochs": "three"})
    with pytest.raises(ConfigError, match="max_length"):
        TextClassifier.resolve_config({"bucket_lengths": [32, 256]})
    with pytest.raises(ConfigError, match="Unknown config key colour"):
        TextClassifier.resolve_config(None, {"colour": 1})


def test_truncation_reaches_the_preprocessors_the_classifier_builds():
    config = TextClassifier.resolve_config(TINY, {"truncation": "head_tail"})
    assert TextClassifier.fit_preprocessor(obvious_classes(1), config).truncation == "head_tail"
    start = TextClassifier.create(obvious_classes(1), TextClassifier.resolve_config(TINY))
    assert start.preprocessor.truncation == "head"
    fine_tuned = TextClassifier.create(obvious_classes(1), config, init_from=start)
    assert fine_tuned.preprocessor.truncation == "head_tail"
    assert fine_tuned.preprocessor.vocabulary == start.preprocessor.vocabulary
    with pytest.raises(ConfigError, match=r"truncation must be one of \['head', 'head_tail'\], got 'tail'"):
        TextClassifier.resolve_config(None, {"truncation": "tail"})


def test_yaml_config_loads(repo_root):
    config = TextClassifier.resolve_config(TextClassifier.config_file())
    assert config.data.text_columns == ("sentence", "content")
    assert config.backbone.max_length >= max(config.bucket_lengths)


def test_tiny_model_separates_obvious_classes(classifier):
    assert classifier.evaluate(obvious_classes(1))["accuracy"] == 1.0
    result = classifier.predict(["what a wonderful story", "an awful , boring film"])
    assert list(result["label"]) == ["pos", "neg"]
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("mode, reduce", [("mean", np.mean), ("max", np.max)])
def test_pooling_ignores_padding(mode, reduce):
    states = np.random.rand(3, 5, 4).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    changed = states.copy()
    changed[0, 2:] = 100.0
    changed[2] = 100.0
    pooling = SequencePooling(mode)
    pooled = pooling(states, padding_mask=mask)
    np.testing.assert_allclose(pooled, pooling(changed, padding_mask=mask), rtol=1e-6)
    np.testing.assert_allclose(pooled[0], reduce(states[0, :2], axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[1], reduce(states[1], axis=0), rtol=1e-6)
    np.testing.assert_array_equal(pooled[2], np.zeros(4))


def test_prediction_does_not_depend_on_bucket_padding(classifier):
    text = "great story"
    short = classifier.preprocessor.tf_tokenize([text], 8)
    long = classifier.preprocessor.tf_tokenize([text], 16)
    logits = [classifier.model({"token_ids": ids, "padding_mask": mask}).numpy() for ids, mask in (short, long)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_embeddings_are_unit_vectors(classifier):
    vectors = classifier.embed(["great", "boring film", ""])
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert classifier.embed([]).shape == (0, 32)


def test_save_load_round_trip(classifier, tmp_path):
    texts = ["wonderful acting", "boring"]
    classifier.save(tmp_path / "task")
    loaded = suite.load(tmp_path / "task")
    assert isinstance(loaded, TextClassifier)
    np.testing.assert_allclose(loaded.predict(texts)["probabilities"], classifier.predict(texts)["probabilities"], atol=1e-6)
    assert loaded.evaluate(obvious_classes(1))["accuracy"] == 1.0


SERVE = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    model = tf.saved_model.load(sys.argv[1])
    texts = json.loads(sys.argv[2])
    out = {}
    for name in ("serving_default", "embed"):
        result = model.signatures[name](text=tf.constant(texts, tf.string))
        out[name] = {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist()
                     for k, v in result.items()}
        empty = model.signatures[name](text=tf.constant([], tf.string))
        out[name + "_empty"] = {k: list(v.shape) for k, v in empty.items()}
    out["imported_suite"] = any(m == "suite" or m.startswith("suite.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_export_serves_raw_text_without_suite(classifier, tmp_path):
    texts = ["What a WONDERFUL film!", "", "naïve, ennuyeux " * 40, "boring"]
    first = classifier.export(tmp_path / "exports", model_name="sentiment")
    second = classifier.export(tmp_path / "exports", model_name="sentiment")
    assert (first.name, second.name) == ("1", "2")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SERVE, str(first), json.dumps(texts)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["imported_suite"] is False
    expected = classifier.predict(texts)
    np.testing.assert_allclose(served["serving_default"]["probabilities"], expected["probabilities"], atol=1e-5)
    assert served["serving_default"]["label"] == list(expected["label"])
    np.testing.assert_allclose(served["embed"]["embedding"], classifier.embed(texts), atol=1e-5)
    assert served["serving_default_empty"] == {"label": [0], "class_id": [0], "probabilities": [0, 2]}
    assert served["embed_empty"] == {"embedding": [0, 32]}


def test_masked_positions_put_selected_tokens_first():
    weights = tf.constant([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert masked_positions(weights, 3).numpy().tolist() == [[1, 3, 0], [0, 1, 2]]


def test_pretrainer_masks_about_15_percent_and_fine_tunes(tmp_path):
    texts = [f"{a} {b} film with {c} acting" for a in ("a", "the", "one") for b in ("great", "bad", "odd")
             for c in ("good", "poor", "fine", "flat")] * 4
    pretrainer = MaskedLMPretrainer.train(texts, TINY, epochs=1, verbose=0)
    selected = real = 0
    for inputs, targets, weights in pretrainer.dataset(pd.DataFrame({"text": texts}), training=True):
        selected += float(tf.reduce_sum(weights))
        real += float(tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.float32))) - len(weights)
        assert inputs["mask_positions"].shape[1] < inputs["token_ids"].shape[1]
    assert 0.10 < selected / real < 0.20
    vectors = pretrainer.embed(["great film", "poor acting"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

    classifier = TextClassifier.train(obvious_classes(), {"vocabulary_size": 999}, init_from=pretrainer, epochs=1, verbose=0)
    assert classifier.preprocessor.vocabulary == pretrainer.preprocessor.vocabulary
    assert classifier.config.backbone == pretrainer.config.backbone
    assert classifier.preprocessor.bucket_lengths == (16,)  # (32, 64, 128) cut at the 16 learned positions
    pretrainer.save(tmp_path / "mlm")
    np.testing.assert_allclose(suite.load(tmp_path / "mlm").embed(["great film"]), pretrainer.embed(["great film"]), atol=1e-6)


def test_pretrainer_sentences_only_fits_vocabulary_on_all_rows_and_reads_sentences():
    sentences = ["a great film with fine acting", "the story is poor and slow"]
    phrases = sentences + ["great film", "fine acting", "poor", "slow", "the story"]
    pretrainer = MaskedLMPretrainer.train(phrases, TINY, epochs=1, batch_size=1, sentences_only=True, verbose=0)
    assert pretrainer.training_metrics["history"]["loss"] and pretrainer.model.optimizer.iterations.numpy() <= 2
    everything = MaskedLMPretrainer.train(phrases, TINY, epochs=1, batch_size=1, verbose=0)
    assert pretrainer.preprocessor.vocabulary == everything.preprocessor.vocabulary
    assert everything.model.optimizer.iterations.numpy() > 2


def test_cli_trains_evaluates_predicts_and_exports(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    sample = repo_root / "data" / "text_classification"
    code = main([
        "train", "text_classification", "--config", str(TextClassifier.config_file()),
        "--data.train", str(sample / "train.csv"), "--data.validation", str(sample / "valid.csv"),
        "--data.test", str(sample / "test.csv"), "--data.text_columns", "[text]",
        "--vocabulary_size", "300", "--bucket_lengths", "[16]", "--backbone.num_layers", "1",
        "--backbone.d_model", "32", "--backbone.ff_dim", "64", "--backbone.max_length", "16",
        "--training.epochs", "1", "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"),
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "loss"} and "validation" in metrics
    assert (tmp_path / "run" / "logs").is_dir()
    assert summary["export"].endswith("text_classification/1")
    assert main(["predict", str(tmp_path / "run" / "task"), "a wonderful film"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] in {"negative", "positive"}
    assert main(["evaluate", str(tmp_path / "run" / "task"), "--data", str(sample / "test.csv")]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)
    assert main(["train", "text_classification", "--training.epochs", "0"]) == 2
