"""Tests for suite.translation.data: reading parallel corpora, WordPiece tokenization, batches."""

import gzip
import json
import logging
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from suite.translation.data import read_parallel
from suite.translation.preprocessor import END_ID, PAD_ID, START_ID, TranslationPreprocessor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "translation"
MULTI30K = REPO_ROOT.parent / "shared" / "datasets" / "multi30k"


def write_lines(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return read_parallel(SAMPLE / "train.tsv")


@pytest.fixture(scope="module")
def valid() -> pd.DataFrame:
    return read_parallel(SAMPLE / "valid.tsv")


@pytest.fixture(scope="module")
def preprocessor(train) -> TranslationPreprocessor:
    return TranslationPreprocessor.fit(train, vocabulary_size=300, max_source_length=14, max_target_length=14)


def decode(strings: tf.Tensor) -> list[str]:
    return [s.decode("utf-8") for s in strings.numpy()]


def test_bundled_sample_is_small_and_clean(train, valid):
    assert len(train) == 600 and len(valid) == 80
    assert train.attrs["skipped_empty"] == 0
    assert not set(valid["source"]) & set(train["source"])
    assert sum(p.stat().st_size for p in SAMPLE.glob("*.tsv")) < 200_000


def test_misaligned_files_name_both_counts_and_files(tmp_path):
    source = write_lines(tmp_path / "a.en", ["One.", "Two.", "Three."])
    target = write_lines(tmp_path / "a.de", ["Eins.", "Zwei."])
    with pytest.raises(ValueError) as error:
        read_parallel(source, target)
    message = str(error.value)
    assert "3 lines" in message and "2 lines" in message
    assert str(source) in message and str(target) in message


def test_empty_lines_drop_whole_pairs_without_shift(tmp_path, caplog):
    source = write_lines(tmp_path / "a.en", ["One.", "", "Three.", "Four.", "  "])
    target = write_lines(tmp_path / "a.de", ["Eins.", "Zwei.", "Drei.", "", "Fünf."])
    with caplog.at_level(logging.WARNING):
        frame = read_parallel(source, target)
    assert frame.to_dict("list") == {"source": ["One.", "Three."], "target": ["Eins.", "Drei."]}
    assert frame.attrs["skipped_empty"] == 3
    assert "3 of 5 pairs" in caplog.text and "[2, 4, 5]" in caplog.text
    with pytest.raises(ValueError, match=r"3 of 5 pairs have an empty side \(lines \[2, 4, 5\]\)"):
        read_parallel(source, target, empty="error")


def test_reads_gzip_files(tmp_path):
    source = write_lines(tmp_path / "train.en.gz", ["A man runs.", "A dog sleeps."])
    target = write_lines(tmp_path / "train.de.gz", ["Ein Mann läuft.", "Ein Hund schläft."])
    frame = read_parallel(source, target)
    assert frame["target"].tolist() == ["Ein Mann läuft.", "Ein Hund schläft."]
    table = write_lines(tmp_path / "pairs.tsv.gz", ["source\ttarget", 'He said "hi".\tEr sagte „hallo“.'])
    assert read_parallel(table).iloc[0].tolist() == ['He said "hi".', "Er sagte „hallo“."]


def test_reads_csv_and_dataframes_with_clear_errors(tmp_path):
    csv_path = write_lines(tmp_path / "pairs.csv", ["en,de", '"Yes, sir.","Ja, mein Herr."'])
    frame = read_parallel(csv_path, source_column="en", target_column="de")
    assert frame.iloc[0].tolist() == ["Yes, sir.", "Ja, mein Herr."]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['source', 'target'\]; it has \['en', 'de'\]"):
        read_parallel(csv_path)
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_parallel(write_lines(tmp_path / "pairs.txt", ["a"]))
    tsv_path = write_lines(tmp_path / "pairs.tsv", ["source\ttarget", "Hi.\tHallo.", "Bye.\t "])
    with pytest.raises(ValueError, match=r"1 of 2 pairs have an empty side \(lines \[3\]\)"):
        read_parallel(tsv_path, empty="error")
    table = pd.DataFrame({"source": ["Hi.", None, "Bye."], "target": ["Hallo.", "Nichts.", "Tschüss."]})
    assert read_parallel(table).attrs["skipped_empty"] == 1
    with pytest.raises(TypeError, match="column 'target' must hold strings; row 1 holds int 7"):
        read_parallel(pd.DataFrame({"source": ["a", "b"], "target": ["x", 7]}))


def test_vocabulary_starts_with_reserved_tokens(preprocessor):
    for vocabulary in (preprocessor.source_vocabulary, preprocessor.target_vocabulary):
        assert list(vocabulary[:4]) == ["[PAD]", "[UNK]", "[START]", "[END]"]
        assert len(vocabulary) <= 300
    assert "ü" in preprocessor.target_vocabulary or "##ü" in preprocessor.target_vocabulary
    assert (PAD_ID, START_ID, END_ID) == (0, 2, 3)


def test_tokenize_detokenize_round_trip(preprocessor, valid):
    for side in ("source", "target"):
        sentences = valid[side].tolist()
        ids = preprocessor.tf_tokenize(tf.constant(sentences), side)
        assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
        assert int(tf.reduce_min(ids.flat_values)) > END_ID
        assert decode(preprocessor.tf_detokenize(ids, side)) == sentences
    umlauts = "Zwei Männer in grünen Hüten lächeln auf der Straße."
    assert decode(preprocessor.tf_detokenize(preprocessor.tf_tokenize([umlauts], "target"))) == [umlauts]


def test_detokenize_drops_special_tokens_and_stops_at_end(preprocessor):
    ids = preprocessor.tf_tokenize(["Ein Hund schläft.", "Eine Frau lächelt."], "target").to_tensor()
    body = ids.numpy()
    padded = np.zeros((2, body.shape[1] + 4), np.int32)
    padded[:, 0] = START_ID
    padded[:, 1 : body.shape[1] + 1] = body
    padded[0, (body[0] > 0).sum() + 1] = END_ID
    padded[0, -1] = body[1, 0]
    assert decode(preprocessor.tf_detokenize(padded)) == ["Ein Hund schläft.", "Eine Frau lächelt."]


def test_detokenize_attaches_punctuation(train):
    extra = pd.DataFrame({"source": ["x"], "target": ["Ein T-Shirt (blau), es ist Jörgs; los!"]})
    preprocessor = TranslationPreprocessor.fit(pd.concat([train, extra]), vocabulary_size=300)
    sentence = extra["target"].iloc[0]
    assert decode(preprocessor.tf_detokenize(preprocessor.tf_tokenize([sentence], "target"))) == [sentence]


def test_lower_case_and_shared_vocabulary(train):
    preprocessor = TranslationPreprocessor.fit(train, vocabulary_size=300, shared_vocabulary=True, lower_case=True)
    assert preprocessor.target_vocabulary is preprocessor.source_vocabulary
    assert preprocessor.get_config()["target_vocabulary"] is None
    assert not any(token != token.lower() for token in preprocessor.source_vocabulary[4:])
    ids = preprocessor.tf_tokenize(["Zwei MÄNNER lächeln.", "zwei männer lächeln."], "target")
    assert ids[0].numpy().tolist() == ids[1].numpy().tolist()
    assert decode(preprocessor.tf_detokenize(ids[:1], "target")) == ["zwei männer lächeln."]
    english = decode(preprocessor.tf_detokenize(preprocessor.tf_tokenize(["A dog is running."]), "source"))
    assert english == ["a dog is running."]


def test_config_round_trip(preprocessor, valid):
    config = json.loads(json.dumps(preprocessor.get_config()))
    restored = TranslationPreprocessor.from_config(config)
    assert restored.get_config() == preprocessor.get_config()
    assert restored.bucket_shapes == preprocessor.bucket_shapes
    sentences = tf.constant(valid["target"].tolist())
    original = preprocessor.tf_tokenize(sentences, "target")
    assert restored.tf_tokenize(sentences, "target").to_list() == original.to_list()
    with pytest.raises(ValueError, match=r"unknown keys \['lowercase'\], missing keys \['lower_case'\]"):
        TranslationPreprocessor.from_config({k.replace("lower_case", "lowercase"): v for k, v in config.items()})
    with pytest.raises(ValueError, match=r"source_vocabulary must start with \['\[PAD\]'"):
        TranslationPreprocessor(["[UNK]", "[PAD]", "[START]", "[END]", "a"])


def test_over_long_pairs_are_counted_then_skipped_or_truncated(preprocessor, train, caplog):
    source_lengths = preprocessor.tf_tokenize(train["source"].tolist()).row_lengths().numpy()
    target_lengths = preprocessor.tf_tokenize(train["target"].tolist(), "target").row_lengths().numpy()
    source_long, target_long = source_lengths > 14, target_lengths + 1 > 14
    stats = preprocessor.length_stats(train)
    assert stats == {
        "pairs": 600,
        "source_too_long": int(source_long.sum()),
        "target_too_long": int(target_long.sum()),
        "too_long": int((source_long | target_long).sum()),
    }
    assert 0 < stats["too_long"] < 600
    with caplog.at_level(logging.WARNING):
        training = preprocessor.dataset(train, 16, training=True, drop_remainder=False)
    assert f"skipped {stats['too_long']} of 600 pairs" in caplog.text
    assert sum(int(labels.shape[0]) for _, labels in training) == 600 - stats["too_long"]
    evaluation = preprocessor.dataset(train, 16)
    assert sum(int(labels.shape[0]) for _, labels in evaluation) == 600


def test_batches_take_bucket_shapes(preprocessor, train):
    shapes = preprocessor.bucket_shapes
    assert shapes == [(8, 8), (14, 14)]
    for training in (True, False):
        seen = set()
        for inputs, labels in preprocessor.dataset(train, 16, shuffle=True, training=training, seed=3):
            encoder, decoder = inputs["encoder_token_ids"], inputs["decoder_token_ids"]
            assert encoder.dtype == decoder.dtype == labels.dtype == tf.int32
            assert decoder.shape == labels.shape and encoder.shape[0] == labels.shape[0]
            assert (encoder.shape[1], decoder.shape[1]) in shapes
            if training:
                assert labels.shape[0] == 16
            seen.add((encoder.shape[1], decoder.shape[1]))
        assert seen == set(shapes)


def test_teacher_forcing_shift(preprocessor, valid):
    roomy = TranslationPreprocessor.from_config(
        {**preprocessor.get_config(), "max_source_length": 64, "max_target_length": 64}
    )
    translations = dict(zip(valid["source"], valid["target"]))
    inputs, labels = next(iter(roomy.dataset(valid, 8)))
    decoder, labels = inputs["decoder_token_ids"].numpy(), labels.numpy()
    sources = decode(roomy.tf_detokenize(inputs["encoder_token_ids"], "source"))
    for row_decoder, row_labels, source in zip(decoder, labels, sources):
        length = int((row_labels != PAD_ID).sum())
        assert row_decoder[0] == START_ID and row_labels[length - 1] == END_ID
        np.testing.assert_array_equal(row_decoder[1:length], row_labels[: length - 1])
        assert (row_decoder[length:] == PAD_ID).all() and (row_labels[length:] == PAD_ID).all()
        assert decode(roomy.tf_detokenize(row_labels[None])) == [translations[source]]


def test_tokenizers_survive_a_saved_model(preprocessor, tmp_path):
    module = tf.Module()
    module.round_trip = tf.function(
        lambda s: preprocessor.tf_detokenize(preprocessor.tf_tokenize(s, "target")),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "model"))
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    sentence = "Drei Kinder in weißen Jacken schlafen im Schnee."
    assert decode(loaded.round_trip(tf.constant([sentence]))) == [sentence]


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="../shared/datasets/multi30k is missing")
def test_reads_multi30k():
    frame = read_parallel(MULTI30K / "train.en.gz", MULTI30K / "train.de.gz")
    assert len(frame) + frame.attrs["skipped_empty"] == 29_000
    assert len(frame) == 29_000
    assert len(read_parallel(MULTI30K / "val.en.gz", MULTI30K / "val.de.gz")) == 1_014
