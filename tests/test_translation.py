"""Translator: cached decoding, greedy/beam agreement, overfitting, save/load, export, CLI."""

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
from suite.translation.preprocessor import END_ID, PAD_ID, START_ID
from suite.tasks import Translator
from suite.translation.decoding import beam_search, greedy_search
from suite.translation.model import InverseSquareRootSchedule, SmoothedSequenceCrossEntropy

PAIRS = [
    ("A dog runs.", "Ein Hund läuft."),
    ("Two men are smiling.", "Zwei Männer lächeln."),
    ("A girl reads a book in the park.", "Ein Mädchen liest ein Buch im Park."),
    ("The woman is cooking.", "Die Frau kocht."),
    ("A boy is riding a bike.", "Ein Junge fährt Fahrrad."),
    ("Two dogs sleep in the snow.", "Zwei Hunde schlafen im Schnee."),
]
UNSEEN = ["A woman reads.", "Two girls are riding in the park.", "", "The dog is smiling in the snow."]
TINY = {
    "vocabulary_size": 200, "max_source_length": 16, "max_target_length": 16, "num_buckets": 1,
    "label_smoothing": 0.0, "warmup_steps": 20,
    "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 64, "dropout": 0.0, "max_length": 16},
    "decoding": {"beam_width": 3, "batch_size": 8},
    "training": {"epochs": 40, "batch_size": 32, "learning_rate": 0.005},
}


def pairs(repeats: int = 1) -> pd.DataFrame:
    return pd.DataFrame(PAIRS * repeats, columns=["source", "target"])


@pytest.fixture(scope="module")
def translator() -> Translator:
    tf.keras.utils.set_random_seed(0)
    return Translator.train(pairs(16), TINY, verbose=0)


def test_yaml_config_and_aligned_file_pattern(repo_root, tmp_path):
    config = Translator.resolve_config(Translator.config_file())
    assert config.data.train.endswith("train.{lang}.gz") and config.schedule == "inverse_sqrt"
    (tmp_path / "p.en").write_text("A dog.\nA cat.\n", encoding="utf-8")
    (tmp_path / "p.de").write_text("Ein Hund.\nEine Katze.\n", encoding="utf-8")
    frame = Translator.read(str(tmp_path / "p.{lang}"), config)
    assert frame.values.tolist() == [["A dog.", "Ein Hund."], ["A cat.", "Eine Katze."]]
    with pytest.raises(ValueError, match="backbone.max_length"):
        Translator.resolve_config({"max_source_length": 80, "backbone": {"position": "learned", "max_length": 64}})


def test_inverse_square_root_schedule_peaks_after_warmup():
    schedule = InverseSquareRootSchedule(1e-3, warmup_steps=100)
    rates = [float(schedule(step)) for step in (0, 49, 99, 399)]
    np.testing.assert_allclose(rates, [1e-5, 5e-4, 1e-3, 5e-4], rtol=1e-5)


def test_loss_ignores_padding_and_smooths():
    labels = np.array([[5, 6, PAD_ID, PAD_ID]])
    logits = np.random.default_rng(0).normal(size=(1, 4, 8)).astype("float32")
    changed = logits.copy()
    changed[:, 2:] += 50.0
    plain = SmoothedSequenceCrossEntropy(0.0)
    log_probs = tf.nn.log_softmax(logits).numpy()
    np.testing.assert_allclose(float(plain(labels, logits)), -(log_probs[0, 0, 5] + log_probs[0, 1, 6]) / 2, rtol=1e-5)
    assert float(plain(labels, changed)) == pytest.approx(float(plain(labels, logits)), rel=1e-6)
    smoothed = float(SmoothedSequenceCrossEntropy(0.1)(labels, logits))
    expected = 0.9 * float(plain(labels, logits)) - 0.1 * log_probs[0, :2].mean(axis=-1).mean()
    assert smoothed == pytest.approx(expected, rel=1e-5)


def test_cached_decode_steps_match_the_full_pass(translator):
    model = translator.model
    source = translator.source_ids(UNSEEN).numpy()
    decoder_ids = np.array([[START_ID, 7, 9, 11, 8, 12]] * len(UNSEEN), np.int32)
    expected = model({"encoder_token_ids": source, "decoder_token_ids": decoder_ids}).numpy()
    encoded, mask = model.encode(source)
    cache = model.init_cache(encoded, 16)
    steps = []
    for t in range(decoder_ids.shape[1]):
        logits, cache = model.decode_step(decoder_ids[:, t : t + 1], cache, tf.constant(t), mask)
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), expected, atol=1e-4)


def step_by_step_greedy(model, source_ids: np.ndarray, max_length: int) -> list[int]:
    """One sentence, no cache: rerun the whole model on the growing prefix at every step."""
    tokens = []
    for _ in range(max_length):
        decoder = np.array([[START_ID, *tokens]], np.int32)
        logits = model({"encoder_token_ids": source_ids[None], "decoder_token_ids": decoder})[0, -1].numpy()
        logits[[PAD_ID, START_ID]] = -np.inf
        tokens.append(int(logits.argmax()))
        if tokens[-1] == END_ID:
            break
    return tokens + [PAD_ID] * (max_length - len(tokens))


def test_batch_greedy_equals_step_by_step_greedy(translator):
    texts = [PAIRS[2][0], *UNSEEN]
    batch = translator.translate_ids(texts, beam_width=1, max_length=10)["token_ids"]
    for text, row in zip(texts, batch):
        source = translator.source_ids([text])[0].numpy()
        if (source != PAD_ID).any():  # an empty source keeps its padding: it attends to nothing else
            source = source[: int((source != PAD_ID).sum())]
        assert row.tolist() == step_by_step_greedy(translator.model, source, 10), text


def test_beam_width_one_equals_greedy(translator):
    source = translator.source_ids([p[0] for p in PAIRS] + UNSEEN)
    greedy = greedy_search(translator.model, source, 16)
    beam = beam_search(translator.model, source, 16, beam_width=1)
    np.testing.assert_array_equal(beam["token_ids"].numpy(), greedy["token_ids"].numpy())
    np.testing.assert_allclose(beam["scores"].numpy(), greedy["scores"].numpy(), atol=1e-5)


def test_tiny_model_overfits_to_exact_translations(translator):
    sources, targets = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    assert translator.translate(sources, beam_width=1) == targets
    assert translator.translate(sources, beam_width=3) == targets
    assert translator.translate("A dog runs.") == ["Ein Hund läuft."]
    metrics = translator.evaluate(pairs(), beam_width=3)
    assert metrics["bleu"] > 99.0 and metrics["chrf"] > 99.0 and metrics["token_accuracy"] == 1.0
    beam = translator.translate_ids(sources, beam_width=3)
    assert (beam["scores"] <= 0).all() and (beam["token_ids"] == END_ID).any(axis=1).all()


def test_save_load_round_trip(translator, tmp_path):
    translator.save(tmp_path / "task")
    loaded = suite.load(tmp_path / "task")
    assert isinstance(loaded, Translator)
    texts = UNSEEN + [PAIRS[0][0]]
    assert loaded.translate(texts) == translator.translate(texts)


SERVE = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    model = tf.saved_model.load(sys.argv[1])
    texts = json.loads(sys.argv[2])
    out = {}
    for name in ("serving_default", "beam_search"):
        result = model.signatures[name](source=tf.constant(texts, tf.string))
        out[name] = {k: [x.decode("utf-8") for x in v.numpy()] if v.dtype == tf.string else v.numpy().tolist()
                     for k, v in result.items()}
    empty = model.signatures["serving_default"](source=tf.constant([], tf.string))
    out["empty"] = {k: list(v.shape) for k, v in empty.items()}
    out["imported_suite"] = any(m == "suite" or m.startswith("suite.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_export_translates_strings_in_a_fresh_process(translator, tmp_path):
    texts = [p[0] for p in PAIRS[:3]] + UNSEEN
    path = translator.export(tmp_path / "exports", model_name="translator")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SERVE, str(path), json.dumps(texts)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["imported_suite"] is False
    assert served["serving_default"]["translation"] == translator.translate(texts, beam_width=1)
    assert served["beam_search"]["translation"] == translator.translate(texts, beam_width=3)
    greedy = translator.translate_ids(texts, beam_width=1)
    np.testing.assert_array_equal(served["serving_default"]["token_ids"], greedy["token_ids"])
    np.testing.assert_allclose(served["serving_default"]["scores"], greedy["scores"], atol=1e-4)
    assert served["empty"] == {"translation": [0], "token_ids": [0, 16], "scores": [0]}


def test_cli_trains_on_the_bundled_sample(repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    sizes = {"vocabulary_size": 300, "max_source_length": 24, "max_target_length": 24, "num_buckets": 1,
             "backbone.num_layers": 1, "backbone.d_model": 16, "backbone.num_heads": 2, "backbone.ff_dim": 32,
             "backbone.max_length": 24, "decoding.beam_width": 1, "training.epochs": 1, "training.batch_size": 64}
    flags = [f"--{key}={value}" for key, value in sizes.items()]
    code = main(["train", "translation", "--data.train", "data/translation/train.tsv",
                 "--data.validation", "data/translation/valid.tsv", "--output-dir", str(tmp_path / "run"), *flags])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["metrics"]["validation"]) >= {"loss", "token_accuracy", "bleu", "chrf"}
    assert (tmp_path / "run" / "task" / "task.json").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["domain"] == "translation"
