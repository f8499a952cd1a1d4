"""Recommendation data: reading rules, leave-one-out, vocabulary and lookup, datasets,
evaluation data, ranking metrics and baselines."""

import gzip
import json
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from suite.recommendation.data import leave_one_out, read_interactions, user_sequences
from suite.recommendation.metrics import (
    ItemCooccurrence,
    MostPopular,
    evaluate_scores,
    full_ranking_ranks,
    ranking_metrics,
    sampled_ranks,
)
from suite.recommendation.preprocessor import RecommendationPreprocessor
from suite.recommendation.synthetic import synthetic_interactions

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ML_100K = REPO_ROOT.parent / "shared" / "datasets" / "ml-100k" / "u.data"
SAMPLE = REPO_ROOT / "data" / "recommendation" / "interactions.csv"


def frame(rows, columns=("user_id", "item_id", "timestamp")):
    return pd.DataFrame(rows, columns=list(columns))


# Reading --------------------------------------------------------------------------------

def test_read_csv_renames_columns_and_keeps_string_ids(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("who,what,when,rating,extra\n007,A1,5,4,x\n007,b2,6,5,y\n007,A1,7,3,z\n")
    df = read_interactions(path, user_column="who", item_column="what", timestamp_column="when")
    assert list(df.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert df["user_id"].tolist() == ["007"] * 3
    assert df["item_id"].tolist() == ["A1", "b2", "A1"]
    assert df["timestamp"].dtype == np.int64
    assert read_interactions(df).equals(df)


def test_unknown_column_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"item_column 'movie' is not a column.*user_id"):
        read_interactions(frame([["u", "i", 1]] * 3), item_column="movie")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_interactions(tmp_path / "x.json")


def test_movielens_formats_by_name(tmp_path):
    rows = ["1\t10\t4\t100", "1\t11\t3\t90", "1\t12\t5\t95"]
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n")
    ml100k = read_interactions(tmp_path / "u.data")
    assert ml100k["item_id"].tolist() == ["10", "11", "12"]
    assert ml100k["rating"].tolist() == [4, 3, 5]
    (tmp_path / "ratings.dat").write_text("\n".join(r.replace("\t", "::") for r in rows) + "\n")
    assert read_interactions(tmp_path / "ratings.dat").equals(ml100k)
    (tmp_path / "renamed.txt").write_text("\n".join(rows) + "\n")
    assert read_interactions(tmp_path / "renamed.txt", format="ml-100k").equals(ml100k)
    assert user_sequences(ml100k)["1"] == ["11", "12", "10"]


def test_tsv_parquet_and_datetime_timestamps(tmp_path):
    df = frame([["u1", "a", "2024-01-02"], ["u1", "b", "2024-01-01"], ["u1", "c", "2024-01-03"]])
    df.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "log.parquet")
    for name in ("log.tsv", "log.parquet"):
        read = read_interactions(tmp_path / name)
        assert read["timestamp"].iloc[1] < read["timestamp"].iloc[0] < read["timestamp"].iloc[2]
        assert user_sequences(read)["u1"] == ["b", "a", "c"]
    with pytest.raises(ValueError, match="neither numbers nor dates; the first is row 1"):
        read_interactions(frame([["u", "a", "2024-01-01"], ["u", "b", "soon"], ["u", "c", "1"]]))


def test_missing_ids_error_or_drop():
    df = frame([["u1", "a", 1], [None, "b", 2], ["u1", " ", 3], ["u1", "c", 4], ["u1", "d", 5]])
    with pytest.raises(ValueError, match=r"2 row\(s\) have a missing ID.*\[1, 2\].*missing='drop'"):
        read_interactions(df)
    dropped = read_interactions(df, missing="drop")
    assert dropped["item_id"].tolist() == ["a", "c", "d"]
    assert dropped.attrs["report"]["missing_dropped"] == 2


def test_duplicate_rules():
    df = frame([["u", "a", 5], ["u", "b", 6], ["u", "a", 5], ["u", "a", 1], ["u", "c", 7]])
    exact = read_interactions(df)
    assert exact["timestamp"].tolist() == [5, 6, 1, 7]
    assert exact.attrs["report"]["duplicates_dropped"] == 1
    first = read_interactions(df, duplicates="first")
    assert first[["item_id", "timestamp"]].values.tolist() == [["b", 6], ["a", 1], ["c", 7]]
    assert first.attrs["report"]["duplicates_dropped"] == 2
    assert len(read_interactions(df, duplicates="keep")) == 5
    with pytest.raises(ValueError, match="duplicates must be one of"):
        read_interactions(df, duplicates="last")


def test_min_events_drops_users_with_counts():
    df = frame([["u1", "a", 1], ["u1", "b", 2], ["u1", "c", 3], ["u2", "a", 1], ["u2", "b", 2]])
    read = read_interactions(df)
    assert set(read["user_id"]) == {"u1"}
    assert read.attrs["report"]["users_dropped"] == 1 and read.attrs["report"]["events_dropped"] == 2
    assert len(read_interactions(df, min_events=2)) == 5
    with pytest.raises(ValueError, match="no interactions left"):
        read_interactions(df, min_events=4)


def test_ties_keep_file_order_and_no_timestamp_uses_rows():
    df = frame([["u", "x", 2], ["u", "y", 1], ["u", "z", 2], ["u", "w", 1]])
    assert user_sequences(read_interactions(df))["u"] == ["y", "w", "x", "z"]
    in_order = read_interactions(df.drop(columns="timestamp"), timestamp_column=None)
    assert user_sequences(in_order)["u"] == ["x", "y", "z", "w"]


def test_sequences_and_pairs_files_read_like_csv(tmp_path):
    (tmp_path / "seq.txt").write_text("u1 a b a\n\n  u2\tc  d e \r\n")
    (tmp_path / "pairs.txt").write_text("u1 a\nu2 c\n\nu1 b\nu1 a\nu2 d\nu2 e\n")
    for name, rows in {"seq": ["u1,a,0", "u1,b,1", "u1,a,2", "u2,c,0", "u2,d,1", "u2,e,2"],
                       "pairs": ["u1,a,0", "u2,c,1", "u1,b,2", "u1,a,3", "u2,d,4", "u2,e,5"]}.items():
        (tmp_path / f"{name}.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
        read = read_interactions(tmp_path / f"{name}.txt")
        assert read.equals(read_interactions(tmp_path / f"{name}.csv"))
        assert user_sequences(read).to_dict() == {"u1": ["a", "b", "a"], "u2": ["c", "d", "e"]}
        assert read.attrs["report"]["duplicates_dropped"] == 0
        first = read_interactions(tmp_path / f"{name}.txt", duplicates="first", min_events=2)
        assert user_sequences(first)["u1"] == ["a", "b"]


def test_text_formats_detected_from_txt_and_gz(tmp_path):
    for name, text, expected in [("s.txt.gz", "1 10 11 12\n2 10 12 13\n", [0, 1, 2, 0, 1, 2]),
                                 ("P.TXT.GZ", "1 10\n1 11\n\n2 10\n1 12\n2 12\n2 13\n", [0, 1, 2, 3, 4, 5])]:
        with gzip.open(tmp_path / name, "wt") as file:
            file.write(text)
        read = read_interactions(tmp_path / name)
        assert read["timestamp"].tolist() == expected and "rating" not in read.columns
        assert user_sequences(read).to_dict() == {"1": ["10", "11", "12"], "2": ["10", "12", "13"]}
    (tmp_path / "s.txt").write_text("1 10 11 12\n2 10 12 13\n")
    assert read_interactions(tmp_path / "s.txt", format="sequences").equals(read_interactions(tmp_path / "s.txt.gz"))


def test_text_format_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("u1 a b c\n\nu2\n")
    with pytest.raises(ValueError, match=r"line 3 of .*empty.txt' has a user but no items: 'u2'"):
        read_interactions(tmp_path / "empty.txt")
    (tmp_path / "twice.txt").write_text("u1 a b c\nu2 a b c\n\nu1 d\n")
    with pytest.raises(ValueError, match="user 'u1' is on lines 1 and 4 of .*one line per user"):
        read_interactions(tmp_path / "twice.txt")
    (tmp_path / "pairs.txt").write_text("u1 a\n\nu1 b c\n")
    with pytest.raises(ValueError, match=r"line 3 of .*pairs.txt' has 3 fields; a pairs file has 2"):
        read_interactions(tmp_path / "pairs.txt", format="pairs")
    with pytest.raises(ValueError, match=r"format must be one of \(.*'sequences', 'pairs'\), got 'seq'"):
        read_interactions(tmp_path / "pairs.txt", format="seq")


# Leave-one-out --------------------------------------------------------------------------

def test_leave_one_out_holds_out_the_last_two_events():
    df = read_interactions(SAMPLE)
    split = leave_one_out(df)
    full = user_sequences(df)
    train = user_sequences(split.train)
    assert len(split.validation) == len(split.test) == df["user_id"].nunique() == 200
    for user, target, test_target in zip(split.validation["user_id"], split.validation["target"], split.test["target"]):
        assert train[user] + [target, test_target] == full[user]
        assert target not in train[user] and test_target not in train[user]
    assert split.test["history"].map(len).tolist() == [len(train[u]) + 1 for u in split.test["user_id"]]
    assert len(split.train) == len(df) - 2 * 200


def test_leave_one_out_drops_short_users():
    df = frame([["u1", "a", 1], ["u1", "b", 2], ["u1", "c", 3], ["u2", "a", 1], ["u2", "b", 2]])
    split = leave_one_out(df)
    assert split.users_dropped == 1
    assert split.train["item_id"].tolist() == ["a"]
    assert split.test.to_dict("records") == [{"user_id": "u1", "history": ["a", "b"], "target": "c"}]


def test_leave_one_out_on_a_sequences_file_holds_out_each_line_end(tmp_path):
    (tmp_path / "seq.txt").write_text("u1 a b a c\nu2 c b d\n")
    split = leave_one_out(read_interactions(tmp_path / "seq.txt"))
    assert split.test.to_dict("records") == [{"user_id": "u1", "history": ["a", "b", "a"], "target": "c"},
                                             {"user_id": "u2", "history": ["c", "b"], "target": "d"}]
    assert split.validation["target"].tolist() == ["a", "b"]
    assert user_sequences(split.train).to_dict() == {"u1": ["a", "b"], "u2": ["c"]}


# Preprocessor ---------------------------------------------------------------------------

def toy_preprocessor(max_length=4):
    train = frame([["u1", "a", 1], ["u1", "b", 2], ["u2", "b", 1], ["u2", "c", 2], ["u2", "b", 3]])
    return RecommendationPreprocessor.fit(train, max_length=max_length)


def test_vocabulary_by_frequency_and_config_round_trip():
    preprocessor = toy_preprocessor()
    assert preprocessor.vocabulary == ["", "[OOV]", "b", "a", "c"]
    config = json.loads(json.dumps(preprocessor.get_config()))
    assert RecommendationPreprocessor.from_config(config).vocabulary == preprocessor.vocabulary
    train = frame([["u", "a", 1], ["u", "b", 2], ["u", "b", 3]])
    assert RecommendationPreprocessor.fit(train, min_item_count=2).vocabulary == ["", "[OOV]", "b"]
    with pytest.raises(ValueError, match="vocabulary must start with"):
        RecommendationPreprocessor(["a", "b"])


def test_tf_lookup_maps_unknown_to_oov_and_empty_to_padding():
    preprocessor = toy_preprocessor()
    ids = tf.constant([["a", "never-seen", ""], ["c", "b", "[OOV]"]])
    np.testing.assert_array_equal(preprocessor.tf_lookup(ids).numpy(), [[3, 1, 0], [4, 2, 1]])
    traced = tf.function(preprocessor.tf_lookup, input_signature=[tf.TensorSpec([None, None], tf.string)])
    np.testing.assert_array_equal(traced(ids).numpy(), [[3, 1, 0], [4, 2, 1]])
    assert preprocessor.tf_item_ids(tf.constant([3, 0, 1])).numpy().tolist() == [b"a", b"", b"[OOV]"]
    np.testing.assert_array_equal(preprocessor.encode_histories([["a", "b", "c", "x", "b"], ["c"], []]),
                                  [[2, 4, 1, 2], [0, 0, 0, 4], [0, 0, 0, 0]])
    serving = tf.function(preprocessor.tf_encode_histories, input_signature=[tf.TensorSpec([None, None], tf.string)])
    right_padded = tf.constant([["a", "", "b", "c", "x", "b", ""], ["c", "", "", "", "", "", ""]])
    np.testing.assert_array_equal(serving(right_padded).numpy(), [[2, 4, 1, 2], [0, 0, 0, 4]])


def test_dataset_shifts_targets_pads_left_and_truncates():
    preprocessor = toy_preprocessor(max_length=3)
    train = frame([["u1", "a", 1], ["u1", "b", 2], ["u1", "c", 3], ["u1", "a", 4], ["u1", "b", 5],
                   ["u2", "c", 1], ["u2", "b", 2], ["u3", "a", 1]])
    inputs, targets = next(iter(preprocessor.dataset(train, batch_size=4)))
    np.testing.assert_array_equal(inputs["item_ids"].numpy(), [[2, 4, 3], [0, 0, 4]])
    np.testing.assert_array_equal(targets.numpy(), [[4, 3, 2], [0, 0, 2]])


def test_dataset_negatives_are_shared_by_the_batch():
    rows = [[f"u{u}", f"i{(u + t) % 6}", t] for u in range(8) for t in range(5)]
    train = frame(rows)
    preprocessor = RecommendationPreprocessor.fit(train, max_length=5)
    data = preprocessor.dataset(train, batch_size=3, training=True, shuffle=True, seed=1, negatives=7, in_batch=4,
                                probabilities=True)
    assert data.element_spec[1]["negatives"].shape == (11,)
    batches = list(data)
    assert len(batches) == 2
    for inputs, targets in batches:
        next_items, negatives = targets["next_items"].numpy(), targets["negatives"].numpy()
        assert inputs["item_ids"].shape == (3, 5) and next_items.shape == (3, 5)
        assert set(negatives[:4]) <= set(next_items[next_items > 0].tolist())
        assert np.all(negatives[4:] >= 2) and np.all(negatives < preprocessor.vocabulary_size)
        assert targets["negative_probability"].shape == (11,) and targets["next_probability"].shape == (3, 5)
    every_item = preprocessor.sampling_probability(tf.range(2, preprocessor.vocabulary_size), 4, 7)
    assert float(tf.reduce_sum(every_item)) == pytest.approx(1.0)
    second_epoch = list(data)
    assert any(not np.array_equal(a[1]["negatives"], b[1]["negatives"]) for a, b in zip(batches, second_epoch))
    fixed = preprocessor.dataset(train, batch_size=3, negatives=7)
    assert len(list(fixed)) == 3
    assert all(np.array_equal(a[1]["negatives"], b[1]["negatives"]) for a, b in zip(fixed, fixed))


def test_evaluation_data_negatives_are_unseen_and_seeded():
    df = read_interactions(SAMPLE)
    split = leave_one_out(df)
    preprocessor = RecommendationPreprocessor.fit(split.train, max_length=8)
    data = preprocessor.evaluation_data(split.validation, num_negatives=100, seed=3, interactions=df)
    assert data.history.shape == (200, 8) and data.negatives.shape == (200, 100)
    vocabulary = np.array(preprocessor.vocabulary)
    everything = user_sequences(df)
    for user, negatives in zip(data.users, data.negatives):
        assert len(set(negatives)) == 100 and negatives.min() >= 2
        assert not set(vocabulary[negatives]) & set(everything[user])
    again = preprocessor.evaluation_data(split.validation, num_negatives=100, seed=3, interactions=df)
    np.testing.assert_array_equal(again.negatives, data.negatives)
    assert preprocessor.tf_item_ids(data.targets).numpy().astype(str).tolist() == split.validation["target"].tolist()
    with pytest.raises(ValueError, match="items never interacted with"):
        preprocessor.evaluation_data(split.validation, num_negatives=300)


# Metrics and baselines ------------------------------------------------------------------

def test_metrics_from_ranks_by_hand():
    ranks = np.array([1.0, 3.0, 11.0, np.inf])
    metrics = ranking_metrics(ranks, ks=(1, 10))
    assert metrics["HR@1"] == 0.25 and metrics["HR@10"] == 0.5
    assert metrics["NDCG@10"] == pytest.approx((1.0 + 0.5) / 4)
    assert metrics["NDCG@1"] == pytest.approx(0.25)
    assert metrics["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)


def test_full_ranking_ties_exclusion_and_oov():
    scores = np.array([[9.0, 9.0, 0.5, 0.7, 0.5, 0.1],
                       [0.0, 0.0, 0.9, 0.8, 0.7, 0.6],
                       [0.0, 0.0, 0.9, 0.8, 0.7, 0.6],
                       [0.0, 9.0, 0.9, 0.8, 0.7, 0.6]])
    targets = np.array([2, 4, 4, 1])
    np.testing.assert_array_equal(full_ranking_ranks(scores, targets), [3, 3, 3, np.inf])
    exclude = [np.array([3]), np.array([2, 3]), np.array([4]), np.array([], int)]
    np.testing.assert_array_equal(full_ranking_ranks(scores, targets, exclude), [2, 1, np.inf, np.inf])
    sampled = np.array([[0.5, 0.1, 0.5, 0.7], [0.9, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(sampled_ranks(sampled), [3, 1])
    np.testing.assert_array_equal(sampled_ranks(sampled, np.array([[1, 2, 3, 4], [5, 2, 3, 4]])), [np.inf, 1])


def test_baselines_on_a_toy_example():
    sequences = [np.array([2, 3, 4]), np.array([3, 5]), np.array([6, 5])]
    popular = MostPopular(7).fit(sequences)
    np.testing.assert_array_equal(popular.counts, [0, 0, 1, 2, 1, 2, 1])
    adjacent = ItemCooccurrence(7, window=1, recent=1).fit(sequences)
    scores = adjacent.score(np.array([[0, 3], [0, 2]]))
    np.testing.assert_allclose(scores[0], [0, 0, 1 + 1 / 3, 2 / 3, 1 + 1 / 3, 1 + 2 / 3, 1 / 3])
    np.testing.assert_allclose(scores[1], [0, 0, 1 / 3, 1 + 2 / 3, 1 / 3, 2 / 3, 1 / 3])
    anywhere = ItemCooccurrence(7, window=None, recent=1).fit(sequences)
    assert anywhere.counts[2, 4] == 1 and adjacent.counts[2, 4] == 0
    history = np.array([[0, 3], [0, 2]])
    for rows in (1, 2):
        results = evaluate_scores(adjacent.score, history, np.array([5, 3]), seen=[np.array([3]), np.array([2])],
                                  negatives=np.array([[2, 6], [4, 6]]), ks=(1,), rows=rows)
        assert results["full"]["HR@1"] == 1.0 and results["sampled"]["MRR"] == 1.0
    fallback = evaluate_scores(popular.score, np.zeros((2, 2), int), np.array([5, 4]), ks=(1,))
    assert fallback["full"]["MRR"] == pytest.approx((1 / 2 + 1 / 5) / 2)


@pytest.mark.skipif(not ML_100K.exists(), reason="needs ../shared/datasets/ml-100k/u.data")
def test_read_movielens_100k():
    df = read_interactions(ML_100K)
    assert len(df) == 100_000 and df["user_id"].nunique() == 943 and df["item_id"].nunique() == 1682
    assert df.attrs["report"]["duplicates_dropped"] == 0
    split = leave_one_out(df)
    assert len(split.test) == 943 and len(split.train) == 100_000 - 2 * 943


def test_synthetic_catalogue_is_covered_and_sequential():
    interactions = synthetic_interactions(300, 1000, mean_length=10, follow=0.5, seed=1)
    assert interactions.equals(synthetic_interactions(300, 1000, mean_length=10, follow=0.5, seed=1))
    assert interactions["user_id"].nunique() == 300 and interactions.groupby("user_id").size().min() >= 5
    assert leave_one_out(interactions).train["item_id"].nunique() == 1000  # every item can be learnt
    counts = interactions["item_id"].value_counts()
    assert counts.iloc[0] > 10 * counts.median()  # power-law popularity
    sequences = user_sequences(interactions)
    pairs = pd.Series([(a, b) for s in sequences for a, b in zip(s[:-1], s[1:])])
    assert pairs.duplicated().mean() > 0.1  # items are followed by the same successor
    with pytest.raises(ValueError, match="mean_length > 5"):
        synthetic_interactions(10, 100, mean_length=5)
