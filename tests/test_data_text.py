"""Tests for suite/text/data.py and suite/text/preprocessor.py: reading, in-graph WordPiece tokenization, bucketed batches, MLM masking."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from suite.text.data import maximal_phrases, read_text_table
from suite.text.preprocessor import CLS_ID, MASK_ID, PAD_ID, RESERVED_TOKENS, SEP_ID, TextPreprocessor, mask_tokens

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "text_classification"
SST2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "sst2"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return read_text_table(SAMPLE / "train.csv")


@pytest.fixture(scope="module")
def pre(train) -> TextPreprocessor:
    return TextPreprocessor.fit(train, vocabulary_size=300, bucket_lengths=(8, 16, 32))


def test_reads_every_format(tmp_path):
    frame = pd.DataFrame({"sentence": ["Good film", "Bad, \"quoted\" film", "ok"], "y": ["pos", "neg", "pos"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False, quoting=3)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_json(tmp_path / "t.json", orient="records")
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ["t.csv", "t.csv.gz", "t.tsv", "t.jsonl", "t.json", "t.parquet"]:
        table = read_text_table(tmp_path / name, text_column="sentence", label_column="y")
        assert list(table.columns) == ["text", "label"], name
        assert table["text"].tolist() == frame["sentence"].tolist(), name
        assert table["label"].tolist() == ["pos", "neg", "pos"], name
    assert list(read_text_table(frame, "sentence", None).columns) == ["text"]


def test_integer_labels_are_normalised_and_sorted_numerically():
    table = read_text_table(pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [10, 2.0, " 1", 2]}))
    assert table["label"].tolist() == [10, 2, 1, 2]
    pre = TextPreprocessor.fit(table, vocabulary_size=20)
    assert pre.label_names == ("1", "2", "10")
    np.testing.assert_array_equal(pre.encode_labels([10, "2", 1.0]), [2, 1, 0])


def test_multi_label_from_lists_and_delimited_strings(tmp_path):
    pd.DataFrame({"text": ["a b", "c"], "label": [["x", "y"], []]}).to_json(
        tmp_path / "m.jsonl", orient="records", lines=True)
    pd.DataFrame({"text": ["a b", "c"], "label": ["x|y", "z"]}).to_csv(tmp_path / "m.csv", index=False)
    from_lists = read_text_table(tmp_path / "m.jsonl", multi_label=True)
    from_strings = read_text_table(tmp_path / "m.csv", multi_label=True)
    assert from_lists["label"].tolist() == [("x", "y"), ()]
    assert from_strings["label"].tolist() == [("x", "y"), ("z",)]
    pre = TextPreprocessor.fit(from_strings, vocabulary_size=20)
    assert pre.multi_label and pre.label_names == ("x", "y", "z")
    _, labels = next(iter(pre.dataset(from_lists, 2)))
    np.testing.assert_array_equal(labels.numpy(), [[1, 1, 0], [0, 0, 0]])
    assert labels.dtype == tf.float32
    with pytest.raises(ValueError, match="multi_label=True"):
        read_text_table(tmp_path / "m.jsonl")


def test_config_errors_name_the_problem(tmp_path, pre, train):
    with pytest.raises(ValueError, match=r"no column 'review'.*\['text', 'label'\]"):
        read_text_table(SAMPLE / "train.csv", text_column="review")
    with pytest.raises(ValueError, match=r"format of .*t\.xlsx"):
        read_text_table(tmp_path / "t.xlsx")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_text_table(tmp_path / "nope.csv")
    with pytest.raises(TypeError, match="source must be a path or a DataFrame"):
        read_text_table(42)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        pre.dataset(train, 0)
    with pytest.raises(ValueError, match="bucket_lengths must be strictly increasing"):
        TextPreprocessor(pre.vocabulary, bucket_lengths=(64, 32))
    with pytest.raises(ValueError, match=r"special tokens .* lacks \['\[PAD\]', '\[UNK\]', '\[CLS\]'\]"):
        TextPreprocessor(["a", "b"])
    with pytest.raises(ValueError, match=r"lacks \['\[SEP\]'\]"):
        TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "a", "b"], separator=True)
    with pytest.raises(ValueError, match=r"unknown keys \['max_len'\]"):
        TextPreprocessor.from_config({**pre.get_config(), "max_len": 3})
    with pytest.raises(ValueError, match="float 0.5"):
        read_text_table(pd.DataFrame({"text": ["a"], "label": [0.5]}))


def test_missing_label_is_an_error_naming_rows(tmp_path):
    (tmp_path / "m.csv").write_text("text,label\ngood,pos\nbad,\nmeh,neg\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1 missing label.*row\(s\) \[1\]"):
        read_text_table(tmp_path / "m.csv")


def test_empty_text_is_kept_and_tokenizes_to_cls(tmp_path, pre):
    (tmp_path / "e.csv").write_text('text,label\n,positive\n"",negative\nNA,positive\n', encoding="utf-8")
    table = read_text_table(tmp_path / "e.csv")
    assert table["text"].tolist() == ["", "", "NA"]
    ids, mask = pre.tf_tokenize(table["text"].tolist(), 8)
    np.testing.assert_array_equal(ids.numpy()[:2], [[CLS_ID] + [PAD_ID] * 7] * 2)
    np.testing.assert_array_equal(mask.numpy()[:2].sum(axis=1), [1, 1])


def test_non_utf8_bytes_are_replaced_in_files_and_in_the_graph(tmp_path, pre):
    (tmp_path / "b.csv").write_bytes(b"text,label\ncaf\xe9 good,positive\n")
    assert read_text_table(tmp_path / "b.csv")["text"][0] == "caf\ufffd good"
    graph_ids, _ = pre.tf_tokenize(tf.constant([b"caf\xe9 good"]), 16)
    read_ids, _ = pre.tf_tokenize(["caf\ufffd good"], 16)
    np.testing.assert_array_equal(graph_ids.numpy(), read_ids.numpy())


def test_unknown_label_names_it_and_the_known_ones(pre):
    with pytest.raises(ValueError, match=r"unknown label 'neutral' at row 1.*\['negative', 'positive'\]"):
        pre.encode_labels(["positive", "neutral"])
    with pytest.raises(ValueError, match="unknown label 'neutral'"):
        pre.dataset(pd.DataFrame({"text": ["a"], "label": ["neutral"]}), 4)


def test_tokenizer_lowercases_strips_accents_and_handles_edge_batches(pre):
    ids, mask = pre.tf_tokenize(["THE CAFÉ SCENE", "the cafe scene", ""], 8)
    np.testing.assert_array_equal(ids.numpy()[0], ids.numpy()[1])
    assert ids.dtype == tf.int32 and mask.dtype == tf.bool and ids.shape == (3, 8)
    assert ids.numpy()[0, 0] == CLS_ID and ids.numpy()[0, 1] != pre.vocabulary.index("[UNK]")
    empty_ids, empty_mask = pre.tf_tokenize(tf.constant([], tf.string), 8)
    assert empty_ids.shape == (0, 8) and empty_mask.shape == (0, 8)
    long_ids, long_mask = pre.tf_tokenize(["good " * 50], 8)
    assert long_mask.numpy().all() and long_ids.shape == (1, 8)


def test_dataset_tokens_equal_direct_calls(pre, train):
    texts = train["text"].tolist()
    rows, seen = 0, 0
    for inputs, labels in pre.dataset(train, 64):
        length = inputs["token_ids"].shape[1]
        direct_ids, direct_mask = pre.tf_tokenize(texts[seen: seen + len(labels)], length)
        np.testing.assert_array_equal(inputs["token_ids"].numpy(), direct_ids.numpy())
        np.testing.assert_array_equal(inputs["padding_mask"].numpy(), direct_mask.numpy())
        seen += len(labels)
    assert seen == len(texts)
    for inputs, _ in pre.dataset(train, 64, shuffle=True, training=True, seed=3):
        length = inputs["token_ids"].shape[1]
        direct = {tuple(row) for row in pre.tf_tokenize(texts, length)[0].numpy()}
        assert all(tuple(row) in direct for row in inputs["token_ids"].numpy())
        rows += len(inputs["token_ids"])
    assert len(texts) - 3 * 64 < rows <= len(texts)


def test_tokenizer_inside_a_saved_model_equals_the_direct_call(tmp_path, pre):
    module = tf.Module()
    module.preprocessor = pre
    module.tokenize = tf.function(lambda text: pre.tf_tokenize(text, 16),
                                  input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "tok"))
    loaded = tf.saved_model.load(str(tmp_path / "tok"))
    texts = ["I loved the Café scene!", "", "unheard-of words, zzzq"]
    for batch in (texts, []):
        served, direct = loaded.tokenize(tf.constant(batch, tf.string)), pre.tf_tokenize(batch, 16)
        np.testing.assert_array_equal(served[0].numpy(), direct[0].numpy())
        np.testing.assert_array_equal(served[1].numpy(), direct[1].numpy())


NUMBERED = [f"w{i}" for i in range(20)]  # "w{i}" is token id 5 + i


def numbered(truncation: str, separator: bool = True) -> TextPreprocessor:
    return TextPreprocessor([*RESERVED_TOKENS, *NUMBERED], bucket_lengths=(4, 10), separator=separator,
                            truncation=truncation)


def test_head_tail_truncation_keeps_the_start_and_the_end():
    long, short, fits = " ".join(NUMBERED), "w3 w4", " ".join(NUMBERED[:8])
    head, both = numbered("head"), numbered("head_tail")
    # 10 tokens leave 8 word pieces between [CLS] and [SEP]: the first 8, or the first 2 and the last 6.
    assert head.tf_token_ids([long, short]).to_list() == [[CLS_ID, *range(5, 13), SEP_ID], [CLS_ID, 8, 9, SEP_ID]]
    assert both.tf_token_ids([long, short]).to_list() == [[CLS_ID, 5, 6, *range(19, 25), SEP_ID],
                                                          [CLS_ID, 8, 9, SEP_ID]]
    assert both.tf_token_ids([fits]).to_list() == head.tf_token_ids([fits]).to_list() == [[CLS_ID, *range(5, 13), SEP_ID]]
    # Without [SEP]: 9 word pieces, 3 + 6; at sequence_length 6 with [SEP]: 4 word pieces, 1 + 3.
    assert numbered("head_tail", separator=False).tf_token_ids([long]).to_list() == [[CLS_ID, 5, 6, 7, *range(19, 25)]]
    np.testing.assert_array_equal(both.tf_tokenize([long], 6)[0].numpy(), [[CLS_ID, 5, 22, 23, 24, SEP_ID]])
    traced = tf.function(lambda text: both.tf_tokenize(text)[0], input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_array_equal(traced(tf.constant([long, short, ""])).numpy(),
                                  both.tf_tokenize([long, short, ""])[0].numpy())
    np.testing.assert_array_equal(both.word_piece_counts([long, short, ""]), [20, 2, 0])
    assert both.word_piece_counts(pd.DataFrame({"text": [long]})).tolist() == [20]
    assert both.word_piece_counts([]).shape == (0,)


def test_truncation_round_trips_and_is_checked(train):
    both = numbered("head_tail")
    restored = TextPreprocessor.from_config(json.loads(json.dumps(both.get_config())))
    assert restored.truncation == "head_tail" and restored.get_config() == both.get_config()
    assert both.with_labels(pd.DataFrame({"text": ["w1"], "label": ["x"]})).truncation == "head_tail"
    saved_before_truncation = {k: v for k, v in both.get_config().items() if k != "truncation"}
    assert TextPreprocessor.from_config(saved_before_truncation).truncation == "head"
    assert TextPreprocessor.fit(train, vocabulary_size=100, truncation="head_tail").truncation == "head_tail"
    with pytest.raises(ValueError, match=r"truncation must be one of \['head', 'head_tail'\], got 'tail'"):
        TextPreprocessor(both.vocabulary, truncation="tail")


def test_bucketing_gives_a_few_static_lengths():
    words = ["alpha", "beta", "gamma", "delta"]
    texts = [" ".join(words[i % 4] for i in range(n)) for n in range(40) for _ in range(3)]
    pre = TextPreprocessor.fit(texts, vocabulary_size=30, bucket_lengths=(4, 8, 16))
    frame = pd.DataFrame({"text": texts})
    lengths = set()
    for inputs in pre.dataset(frame, 8, shuffle=True, training=True, seed=0):
        ids, mask = inputs["token_ids"].numpy(), inputs["padding_mask"].numpy()
        lengths.add(ids.shape[1])
        assert ids.shape == (8, ids.shape[1]) and mask.sum(axis=1).max() <= ids.shape[1]
        smaller = [b for b in (4, 8, 16) if b < ids.shape[1]]
        assert not smaller or mask.sum(axis=1).min() > max(smaller)
    assert lengths == {4, 8, 16}
    for inputs in pre.dataset(frame, 8):
        longest = inputs["padding_mask"].numpy().sum(axis=1).max()
        assert inputs["token_ids"].shape[1] == min(b for b in (4, 8, 16) if b >= longest)


def test_mask_tokens_proportions():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(400, 128)).astype(np.int32)
    ids[:, 0] = CLS_ID
    mask = np.arange(128)[None, :] < rng.integers(1, 129, size=(400, 1))
    ids[~mask] = PAD_ID
    masked, targets, weights = (t.numpy() for t in mask_tokens(ids, mask, tf.constant([1, 2]), vocab_size=1000))
    selected = weights > 0
    real = mask & (ids >= 5)
    assert not selected[~real].any()
    np.testing.assert_array_equal(targets, ids)
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    assert abs(selected.sum() / real.sum() - 0.15) < 0.01
    as_mask = (masked == MASK_ID)[selected].mean()
    as_random = ((masked != ids) & (masked != MASK_ID))[selected].mean()
    kept = (masked == ids)[selected].mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(as_random - 0.1) < 0.02 and abs(kept - 0.1) < 0.02
    assert ((masked >= 5) & (masked < 1000) | (masked == MASK_ID) | ~real).all()
    again = mask_tokens(ids, mask, tf.constant([1, 2]), vocab_size=1000)[0].numpy()
    np.testing.assert_array_equal(masked, again)


def test_maximal_phrases_keep_each_sentence_once():
    phrases = ["a fine film", "fine film", "film", "a fine", "dull", "a fine film", "fine", "not dull"]
    assert maximal_phrases(phrases) == ["a fine film", "not dull"]
    assert maximal_phrases(["fine films", "film"]) == ["fine films", "film"]
    assert maximal_phrases([]) == []


def test_config_round_trip_and_with_labels(pre, train):
    config = json.loads(json.dumps(pre.get_config()))
    restored = TextPreprocessor.from_config(config)
    assert restored.get_config() == pre.get_config()
    texts = ["What a dull film!", ""]
    np.testing.assert_array_equal(restored.tf_tokenize(texts)[0].numpy(), pre.tf_tokenize(texts)[0].numpy())
    unlabeled = TextPreprocessor.fit(train["text"].tolist(), vocabulary_size=300)
    assert unlabeled.label_names == () and unlabeled.num_labels == 0
    labeled = unlabeled.with_labels(train)
    assert labeled.vocabulary == unlabeled.vocabulary and labeled.label_names == ("negative", "positive")


def test_bundled_sample_splits():
    splits = {name: read_text_table(SAMPLE / f"{name}.csv") for name in ("train", "valid", "test")}
    assert [len(s) for s in splits.values()] == [320, 40, 40]
    assert set(splits["train"]["label"]) == {"positive", "negative"}
    assert not set(splits["train"]["text"]) & (set(splits["valid"]["text"]) | set(splits["test"]["text"]))


@pytest.mark.skipif(not (SST2 / "dev.tsv").is_file(), reason="SST-2 is not in ../shared/datasets")
def test_reads_sst2():
    train = read_text_table(SST2 / "train.tsv", text_column="sentence")
    dev = read_text_table(SST2 / "dev.tsv", text_column="content")
    assert len(train) == 63982 and len(dev) == 872
    assert set(train["label"]) == set(dev["label"]) == {0, 1}
    pre = TextPreprocessor.fit(dev, vocabulary_size=500)
    assert pre.label_names == ("0", "1") and pre.vocabulary_size > 100
