"""Recommender: causal masking, a learnable item cycle, exclude-seen, OOV, save/load, export, CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from suite.backbone import BackboneConfig
from suite.cli import main
from suite.config import ConfigError
from suite.tasks import Recommender, Task
from suite.recommendation.data import leave_one_out
from suite.recommendation.data import HeldOut, training_windows
from suite.recommendation import losses
from suite.recommendation.model import SASRec

CYCLE = [f"c{i:02d}" for i in range(20)]
TINY_BACKBONE = {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 32, "dropout": 0.0, "max_length": 8,
                 "causal": True, "position": "learned"}
TINY = {
    "max_length": 8,
    "window_stride": 8,
    "eval_negatives": 10,
    "backbone": TINY_BACKBONE,
    "training": {"epochs": 20, "batch_size": 32, "learning_rate": 0.01, "warmup_fraction": 0.0},
}
SERVE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = served(history=tf.constant(json.loads(sys.argv[2])), k=tf.fill([len(json.loads(sys.argv[2]))], int(sys.argv[3])))
    print(json.dumps({"imported_suite": any(m == "suite" or m.startswith("suite.") for m in sys.modules),
                      "item_ids": out["item_ids"].numpy().astype(str).tolist(),
                      "scores": out["scores"].numpy().tolist()}))
""")


def cycle_interactions(users: int = 64, events: int = 8, seed: int = 0) -> pd.DataFrame:
    """Every user walks the item cycle c00 -> c01 -> ... -> c19 -> c00 from a random start."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{user}", CYCLE[(start + step) % len(CYCLE)], step)
            for user, start in enumerate(rng.integers(0, len(CYCLE), users)) for step in range(events)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    return Recommender.train(cycle_interactions(), TINY, verbose=0)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="loss must be one of"):
        Recommender.resolve_config(None, {"loss": "hinge"})
    with pytest.raises(ConfigError, match=r"backbone.max_length \(20\) must cover max_length \(50\)"):
        Recommender.resolve_config({"max_length": 50, "backbone": {"max_length": 20}})
    with pytest.raises(ConfigError, match="causal"):
        Recommender.resolve_config({"backbone": {"causal": False}})
    with pytest.raises(ConfigError, match="window_stride"):
        Recommender.resolve_config({"window_stride": 60})


def test_yaml_config_loads(repo_root):
    config = Recommender.resolve_config(Recommender.config_file())
    assert config.data.train.endswith("ml-100k/u.data") and config.backbone.causal


def test_states_at_t_ignore_later_items():
    model = SASRec(12, BackboneConfig(**{**TINY_BACKBONE, "num_layers": 2}))
    table = np.asarray(model.item_embedding.embeddings)
    first = np.array([[0, 0, 3, 4, 5, 6, 7, 8]], np.int32)
    second = first.copy()
    second[0, 5:] = [11, 2, 9]
    states = [np.asarray(model({"item_ids": ids}, training=False)) for ids in (first, second)]
    scores = [s @ table.T for s in states]
    # Positions 0-1 are padding: their states are never read.
    np.testing.assert_allclose(scores[0][:, 2:5], scores[1][:, 2:5], atol=1e-5)
    assert np.abs(scores[0][:, 5:] - scores[1][:, 5:]).max() > 1e-3


def test_training_windows_cover_long_sequences():
    interactions = cycle_interactions(users=2, events=10)
    windows = training_windows(interactions, length=4, stride=3)
    sequences = windows.windows.groupby("user_id", sort=False)["item_id"].agg(list)
    assert len(windows) == 2 * 3 and all(len(s) == 4 for s in sequences)
    assert {item for s in sequences for item in s} == set(interactions["item_id"])
    assert len(training_windows(interactions, 4, 0)) == 2


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "gbce"])
def test_validation_targets_only_the_held_out_item(loss):
    # u1: a b c | b (validation) | x (test); u2: c a | c | y. Training vocabulary: a, c, b.
    rows = [("u1", item, t) for t, item in enumerate("abcbx")] + [("u2", item, t) for t, item in enumerate("cacy")]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    split = leave_one_out(interactions)
    config = {**TINY, "max_length": 4, "window_stride": 4, "loss": loss, "num_negatives": 2, "in_batch_negatives": 3,
              "backbone": {**TINY_BACKBONE, "max_length": 4}}
    task = Recommender.create(split.train, Recommender.resolve_config(config))
    assert task.preprocessor.vocabulary == ["", "[OOV]", "a", "c", "b"]
    assert task.preprocessor.counts == [0, 0, 2, 2, 1]
    batches = list(task.dataset(HeldOut(interactions, split, "validation")))
    assert len(batches) == 1
    inputs, targets = batches[0]
    sampled = targets if loss != "softmax" else None
    targets = targets["next_items"] if sampled else targets
    np.testing.assert_array_equal(inputs["item_ids"], [[0, 2, 4, 3], [0, 0, 3, 2]])  # a b c; c a
    np.testing.assert_array_equal(targets, [[0, 0, 0, 4], [0, 0, 0, 3]])  # b; c
    if sampled is None:
        return
    negatives = np.asarray(sampled["negatives"])
    in_batch = 3 if loss == "sampled_softmax" else 0
    assert negatives.shape == (in_batch + 2,) and (negatives[in_batch:] >= 2).all()
    assert sorted(negatives[:in_batch]) == ([0, 3, 4] if in_batch else [])  # the batch's 2 next items, then padding
    again = next(iter(task.dataset(HeldOut(interactions, split, "validation"))))[1]["negatives"]
    np.testing.assert_array_equal(again, negatives)
    if loss == "sampled_softmax":  # 3 draws by frequency (a, c: 2/5; b: 1/5) and 2 uniform over 3 items
        np.testing.assert_allclose(sampled["next_probability"][:, -1], [(3 / 5 + 2 / 3) / 5, (6 / 5 + 2 / 3) / 5],
                                   rtol=1e-6)


def test_sampled_softmax_with_every_item_is_the_full_softmax():
    rng = np.random.default_rng(0)
    states, table = rng.normal(size=(2, 3, 4)).astype("float32"), rng.normal(size=(7, 4)).astype("float32")
    next_items = np.array([[2, 5, 0], [6, 3, 4]], "int32")
    items = np.arange(2, 7, dtype="int32")

    def softmax_over_items(draws):  # every item once, its logit less log(its draw probability)
        logits = states @ table[2:].T - np.log(draws)
        target = np.take_along_axis(logits, np.maximum(next_items - 2, 0)[..., None], axis=-1)[..., 0]
        return np.log(np.exp(logits).sum(-1)) - target

    for draws in (np.full(5, 0.2, "float32"), np.array([0.6, 0.1, 0.1, 0.1, 0.1], "float32")):
        next_draws = draws[np.maximum(next_items - 2, 0)]
        sampled = losses.sampled_softmax(states, table, next_items, items, next_draws, draws)
        np.testing.assert_allclose(np.asarray(sampled)[next_items > 0], softmax_over_items(draws)[next_items > 0],
                                   rtol=1e-5)


def test_gbce_calibration():
    assert losses.gbce_beta(256, 1001, 0.0) == pytest.approx(1.0)
    assert losses.gbce_beta(256, 1001, 1.0) == pytest.approx(256 / 1000)
    states, table = np.ones((1, 1, 2), "float32"), np.array([[0, 0], [0, 0], [1, 0], [0, 1]], "float32")
    per_position = losses.gbce(states, table, np.array([[2]], "int32"), np.array([2, 3], "int32"), 0.5)
    # 0.5 * softplus(-1) for the positive, softplus(1) for item 3; item 2 among the negatives is an accidental hit.
    assert float(np.asarray(per_position)[0, 0]) == pytest.approx(0.5 * np.log1p(np.exp(-1)) + np.log1p(np.exp(1)), rel=1e-6)


@pytest.mark.parametrize("loss, epochs, hit_rate, mrr_over_popular",
                         [("sampled_softmax", 10, 0.9, 2.0), ("gbce", 10, 0.6, 1.5)])
def test_sampled_losses_learn_the_item_cycle(loss, epochs, hit_rate, mrr_over_popular):
    # 2 steps an epoch: the binary cross-entropy learns more slowly than the softmaxes, as on real data.
    task = Recommender.train(cycle_interactions(), TINY, verbose=0, loss=loss, num_negatives=16, in_batch_negatives=16,
                             **{"training.epochs": epochs, "training.learning_rate": 0.05})
    assert task.model.item_loss == loss
    test = task.evaluate(cycle_interactions(users=40, seed=1))
    assert test["model"]["full"]["HR@10"] >= hit_rate
    assert test["model"]["full"]["MRR"] > mrr_over_popular * test["most_popular"]["full"]["MRR"]


def test_early_stopping_keeps_the_best_validation_epoch():
    # Random items: the held-out loss stops improving once the model memorises the training events.
    rng = np.random.default_rng(0)
    rows = [(f"u{user}", CYCLE[item], step) for user in range(64) for step, item in enumerate(rng.integers(0, 20, 8))]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    task = Recommender.train(interactions, TINY, verbose=0, **{"training.epochs": 12, "training.learning_rate": 0.05,
                                                                "training.early_stopping_patience": 2})
    metrics = task.training_metrics
    losses = metrics["history"]["val_loss"]
    assert len(losses) == metrics["epochs_run"] < 12 and metrics["best_epoch"] == int(np.argmin(losses)) + 1
    assert metrics["epochs_run"] - metrics["best_epoch"] == 2
    assert set(metrics["validation"]) == {"users", "model", "most_popular", "cooccurrence"}
    # The kept weights are the best epoch's: their loss on the held-out items is the lowest val_loss.
    validation = HeldOut(interactions, leave_one_out(interactions), "validation")
    loss = task.model.evaluate(task.dataset(validation), return_dict=True, verbose=0)["loss"]
    assert loss == pytest.approx(min(losses), rel=1e-4)


def test_approximate_index_finds_the_exact_top_items(recommender):
    pytest.importorskip("faiss")
    histories = [["c03", "c04", "c05"], ["c17", "c18"], CYCLE[:19]]
    with pytest.raises(ValueError, match="build_index"):
        recommender.recommend(histories, approximate=True)
    recommender.build_index()
    exact = recommender.recommend(histories, k=5)
    approximate = recommender.recommend(histories, k=5, approximate=True)
    np.testing.assert_array_equal(approximate["item_ids"], exact["item_ids"])
    np.testing.assert_allclose(approximate["scores"], exact["scores"], rtol=1e-4, atol=1e-4)
    assert list(approximate["item_ids"][2]) == ["c19", "", "", "", ""]  # one unseen item left


def test_max_seconds_stops_the_run():
    task = Recommender.train(cycle_interactions(), TINY, verbose=0, **{"training.epochs": 50, "training.max_seconds": 1e-3})
    assert task.training_metrics["epochs_run"] == 1 and len(task.training_metrics["history"]["val_loss"]) == 1


def test_tiny_model_learns_the_item_cycle(recommender):
    test = recommender.evaluate(cycle_interactions(users=40, seed=1))
    assert test["users"] == 40
    assert test["model"]["full"]["HR@10"] == 1.0 and test["model"]["full"]["MRR"] > 0.9
    assert test["model"]["sampled"]["NDCG@10"] > 0.9
    assert set(test) == {"users", "model", "most_popular", "cooccurrence"}
    assert test["model"]["full"]["MRR"] > test["most_popular"]["full"]["MRR"]
    top = recommender.recommend({"a": ["c03", "c04", "c05"], "b": ["c18", "c19"]}, k=2)
    assert top["users"].tolist() == ["a", "b"]
    assert top["item_ids"][:, 0].tolist() == ["c06", "c00"]
    assert top["scores"].shape == (2, 2) and (top["scores"][:, 0] > top["scores"][:, 1]).all()


def test_exclude_seen_drops_the_history(recommender):
    history = ["c03", "c04", "c05", "c06", "c07"]
    excluded = recommender.recommend([history], k=100)
    assert excluded["item_ids"].shape == (1, 20)
    assert not set(excluded["item_ids"][0, :15]) & set(history)
    assert (excluded["item_ids"][0, 15:] == "").all() and (excluded["scores"][0, 15:] == 0).all()
    kept = recommender.recommend([history], k=20, exclude_seen=False)
    assert set(history) <= set(kept["item_ids"][0]) and np.isfinite(kept["scores"]).all()
    with pytest.raises(TypeError, match=r"user_histories\[0\] must be a list of item IDs"):
        recommender.recommend(["c01"])


def test_save_and_load_round_trip(recommender, tmp_path):
    recommender.save(tmp_path / "task")
    loaded = Task.load(tmp_path / "task")
    assert isinstance(loaded, Recommender) and loaded.preprocessor.vocabulary == recommender.preprocessor.vocabulary
    history = recommender.preprocessor.encode_histories([["c01", "c02"], ["c10"]])
    np.testing.assert_allclose(loaded.item_scores(history), recommender.item_scores(history), atol=1e-5)


def test_export_serves_item_ids_in_a_fresh_process(recommender, tmp_path):
    histories = [["c07", "c08", "c09", ""], ["c02", "never-seen", "", ""], ["", "", "", ""], ["?", "c11", "c12", "c13"]]
    path = recommender.export(tmp_path / "exports")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SERVE, str(path), json.dumps(histories), "3"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert not served["imported_suite"]
    expected = recommender.recommend(histories, k=3)
    assert served["item_ids"] == expected["item_ids"].tolist()
    np.testing.assert_allclose(served["scores"], expected["scores"], atol=1e-4)
    assert served["item_ids"][0][0] == "c10" and served["item_ids"][3][0] == "c14"
    assert not {"", "[OOV]"} & {item for row in served["item_ids"] for item in row}


def test_cli_trains_on_the_sample_predicts_and_exports(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    code = main([
        "train", "recommendation", "--data.train", "data/recommendation/interactions.csv",
        "--max_length", "8", "--window_stride", "4", "--loss", "gbce", "--eval_negatives", "20", "--backbone.num_layers", "1",
        "--backbone.d_model", "16", "--backbone.ff_dim", "16", "--backbone.max_length", "8",
        "--training.epochs", "1", "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"),
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["users"] == 200 and set(metrics["validation"]["model"]) == {"full", "sampled"}
    assert summary["export"].endswith("recommendation/1")
    assert main(["predict", str(tmp_path / "run" / "task"), "i001,i002,i003"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert len(predicted[0]["recommendations"]) == 10
    assert not {"i001", "i002", "i003"} & {r["item_id"] for r in predicted[0]["recommendations"]}
