"""Masked-LM pretraining at corpus scale on a tiny generated corpus: streamed gzip files, packed rows,
dynamic and whole-word masking, held-out perplexity, tokens/s, resume, and continued pretraining of a
checkpoint that then fine-tunes."""

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from test_pretrained import VOCABULARY, write_checkpoint

import suite.core.checkpoint
from suite.tasks import MaskedLMPretrainer, TextClassifier
from suite.text.corpus import TextCorpus, packed_length, packed_sequences
from suite.text.masked_lm import first_regular_id, word_start_tokens
from suite.text.preprocessor import TextPreprocessor, mask_tokens

STEMS = ("film", "act", "play", "watch", "love", "hat", "bor", "charm", "plot", "scene", "cast", "direct")
ENDINGS = ("", "ing", "ed", "s", "er", "ly")
TINY = {
    "vocabulary_size": 120,
    "bucket_lengths": [16],
    "packing": True,
    "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "dropout": 0.0, "max_length": 16},
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.003, "warmup_fraction": 0.0, "checkpoint_steps": 2},
}


def documents(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(STEMS) + rng.choice(ENDINGS) for _ in range(rng.integers(3, 30))) + " ."
            for _ in range(count)]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "reviews.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(documents(200)) + "\n")
    return path


def test_corpus_streams_splits_and_samples(corpus_file, tmp_path):
    corpus = TextCorpus.read(corpus_file)
    assert len(corpus) == 200
    held_out, rest = corpus.split(20)
    assert (len(held_out), len(rest)) == (20, 180)
    lines = [line.decode() for line in rest.lines().as_numpy_iterator()]
    assert lines == documents(200)[20:]
    assert corpus.sample(10) == documents(200)[::20]
    plain = tmp_path / "more.txt"
    plain.write_text("one more\n")
    assert len(TextCorpus.read([corpus_file, plain])) == 201
    with pytest.raises(ValueError, match="held_out must be in"):
        corpus.split(200)
    with pytest.raises(FileNotFoundError, match="no such file"):
        TextCorpus.read(tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="not a corpus file"):
        TextCorpus.read(tmp_path / "table.csv")


def test_packing_fills_every_row_with_the_document_stream():
    texts = documents(30)
    pre = TextPreprocessor.fit(texts, vocabulary_size=120)
    rows = np.stack(list(packed_sequences(tf.data.Dataset.from_tensor_slices(texts), pre, 16).as_numpy_iterator()))
    stream = np.concatenate([np.append(ids, pre.sep_id) for ids in pre.word_pieces(texts).to_list()])
    assert rows.shape == (len(stream) // 14, 16)
    assert (rows[:, 0] == pre.cls_id).all() and (rows[:, -1] == pre.sep_id).all()
    np.testing.assert_array_equal(rows[:, 1:-1].reshape(-1), stream[: rows.shape[0] * 14])
    assert packed_length(tf.data.Dataset.from_tensor_slices(texts), pre, 16) == rows.shape[0]


def test_whole_word_masking_selects_all_pieces_of_a_word():
    texts = documents(400, seed=1)
    pre = TextPreprocessor.fit(texts, vocabulary_size=120)
    assert first_regular_id(pre.vocabulary) == 5 and first_regular_id(VOCABULARY) == 6
    ids, padding = pre.tf_tokenize(texts, 64)
    starts = tf.gather(tf.constant(word_start_tokens(pre.vocabulary)), ids)
    assert not starts.numpy().all(), "the corpus must split some words into pieces"
    _, _, weights = mask_tokens(ids, padding, tf.constant([3, 4]), vocab_size=pre.vocabulary_size, word_starts=starts)
    selected, starts = weights.numpy() > 0, starts.numpy()
    words = np.cumsum(starts, axis=1)
    for row in range(len(texts)):
        for word in np.unique(words[row][selected[row]]):
            pieces = (words[row] == word) & padding.numpy()[row] & (ids.numpy()[row] >= 5)
            assert selected[row][pieces].all()
    chosen_words = sum(len(np.unique(words[r][selected[r]])) for r in range(len(texts)))
    all_words = sum(len(np.unique(words[r][padding.numpy()[r] & (ids.numpy()[r] >= 5)])) for r in range(len(texts)))
    assert abs(chosen_words / all_words - 0.15) < 0.02


def test_pretraining_on_a_corpus_reports_perplexity_tokens_per_second_and_exact_steps(corpus_file):
    pretrainer = MaskedLMPretrainer.train(corpus_file, TINY, held_out_documents=20, whole_word_masking=True,
                                          epochs=2, verbose=0)
    metrics = pretrainer.training_metrics
    train, validation = TextCorpus.read(corpus_file).split(20)[::-1]
    steps = sum(1 for _ in pretrainer.dataset(train, training=True))
    assert steps == pretrainer.steps_per_epoch(train) == pretrainer.model.optimizer.iterations.numpy() // 2
    assert len(metrics["history"]["tokens_per_second"]) == 2 and min(metrics["history"]["tokens_per_second"]) > 0
    assert metrics["validation"]["perplexity"] == pytest.approx(math.exp(metrics["validation"]["loss"]))
    assert metrics["history"]["val_loss"][1] < metrics["history"]["val_loss"][0]
    best = metrics["best_epoch"] - 1
    assert metrics["validation"]["loss"] == pytest.approx(metrics["history"]["val_loss"][best], rel=1e-5)
    assert metrics["validation"]["accuracy"] == pytest.approx(metrics["history"]["val_accuracy"][best], rel=1e-5)

    tf.random.set_seed(1)
    first = next(iter(pretrainer.dataset(validation)))
    tf.random.set_seed(2)
    second = next(iter(pretrainer.dataset(validation)))
    np.testing.assert_array_equal(first[0]["token_ids"], second[0]["token_ids"])
    tf.random.set_seed(1)
    one = next(iter(pretrainer.dataset(train, training=True)))[0]["token_ids"].numpy()
    tf.random.set_seed(2)
    other = next(iter(pretrainer.dataset(train, training=True)))[0]["token_ids"].numpy()
    assert not np.array_equal(one, other)
    assert one.shape == (8, 16) and (one != 0).all()


def test_max_steps_ends_the_run_and_the_schedule_spans_them(corpus_file):
    pretrainer = MaskedLMPretrainer.train(corpus_file, TINY, held_out_documents=20, epochs=3, verbose=0,
                                          **{"training.max_steps": 5, "training.decay": "linear"})
    metrics, optimizer = pretrainer.training_metrics, pretrainer.model.optimizer
    assert pretrainer.steps_per_epoch(TextCorpus.read(corpus_file).split(20)[1]) > 5
    assert int(optimizer.iterations) == 5
    assert metrics["epochs_run"] == 1 and len(metrics["history"]["val_loss"]) == 1
    assert float(optimizer.learning_rate) == pytest.approx(0.0)


def test_an_interrupted_corpus_run_resumes_to_the_uninterrupted_weights(corpus_file, tmp_path, monkeypatch):
    config = {**TINY, "held_out_documents": 20, "training": {**TINY["training"], "epochs": 2}}
    reference = MaskedLMPretrainer.train(corpus_file, config, verbose=0)
    save = suite.core.checkpoint.RunCheckpoint.save

    def save_then_die(self, progress):
        save(self, progress)
        if (progress.epoch, progress.step) == (1, 4):
            raise KeyboardInterrupt

    monkeypatch.setattr(suite.core.checkpoint.RunCheckpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        MaskedLMPretrainer.train(corpus_file, config, output_dir=tmp_path / "run", verbose=0)
    monkeypatch.setattr(suite.core.checkpoint.RunCheckpoint, "save", save)
    resumed = MaskedLMPretrainer.train(corpus_file, config, output_dir=tmp_path / "run", resume=True, verbose=0)
    for got, want in zip(resumed.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_continued_pretraining_of_a_checkpoint_ties_or_loads_the_head_and_fine_tunes(tmp_path):
    from test_pretrained import random_bert_tensors

    folder = write_checkpoint(tmp_path / "bert")
    texts = ["the film was great fun", "a dull story of bad acting", "it is a good movie"] * 8
    config = {**TINY, "pretrained": str(folder)}
    pretrainer = MaskedLMPretrainer.create(texts, MaskedLMPretrainer.resolve_config(config))
    assert pretrainer.preprocessor.bucket_lengths == (16,) and pretrainer.preprocessor.separator
    assert pretrainer.config.backbone.d_model == 32 and pretrainer.config.vocabulary_size == len(VOCABULARY)
    embeddings = random_bert_tensors(np.random.default_rng(0))["embeddings.word_embeddings.weight"]
    np.testing.assert_allclose(pretrainer.encoder.token_embedding.embeddings.numpy(), embeddings)
    np.testing.assert_array_equal(pretrainer.model.output_bias.numpy(), 0.0)

    tensors = random_bert_tensors(np.random.default_rng(0))
    head = {"cls.predictions.transform.dense.weight": np.eye(32, dtype=np.float32) * 2,
            "cls.predictions.transform.dense.bias": np.ones(32, np.float32),
            "cls.predictions.transform.LayerNorm.weight": np.full(32, 3.0, np.float32),
            "cls.predictions.transform.LayerNorm.bias": np.zeros(32, np.float32),
            "cls.predictions.bias": np.arange(len(VOCABULARY), dtype=np.float32)}
    with_head = write_checkpoint(tmp_path / "bert_mlm", {**tensors, **head})
    loaded = MaskedLMPretrainer.create(texts, MaskedLMPretrainer.resolve_config({**config, "pretrained": str(with_head)}))
    np.testing.assert_array_equal(loaded.model.transform.kernel.numpy(), np.eye(32) * 2)
    np.testing.assert_array_equal(loaded.model.output_bias.numpy(), np.arange(len(VOCABULARY)))

    adapted = MaskedLMPretrainer.train(texts, config, verbose=0)
    assert adapted.training_metrics["history"]["loss"]
    labelled = pd.DataFrame({"text": texts, "label": ["pos", "neg", "pos"] * 8})
    classifier = TextClassifier.train(labelled, {"pooling": "mean"}, init_from=adapted, epochs=1, verbose=0)
    assert classifier.preprocessor.vocabulary == VOCABULARY and classifier.config.backbone == adapted.config.backbone
    assert classifier.preprocessor.bucket_lengths == (32, 64, 128)  # the classifier's own, within 512 positions
    for got, want in zip(classifier.encoder.get_weights(), adapted.encoder.get_weights(), strict=True):
        assert got.shape == want.shape


def test_corpus_settings_are_checked(corpus_file):
    with pytest.raises(ValueError, match="corpus, read as a stream: pretraining on it needs packing: true"):
        MaskedLMPretrainer.train(corpus_file, {**TINY, "packing": False}, verbose=0)
    with pytest.raises(ValueError, match="cannot be combined"):
        MaskedLMPretrainer.resolve_config({**TINY, "sentences_only": True})
    with pytest.raises(ValueError, match="held_out_documents must be a non-negative integer"):
        MaskedLMPretrainer.resolve_config({**TINY, "held_out_documents": -1})
