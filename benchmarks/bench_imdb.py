"""IMDB and SST-2 sentiment: TF-IDF baselines, a Transformer from scratch, fine-tuning from an MLM pretrainer
and from all-MiniLM-L6-v2, long reviews cut head + tail.

IMDB is `../shared/datasets/imdb/labelled.tsv.gz`: rows 1-25,000 are the official train split, 25,001-50,000
the test split. The Transformers train on 22,500 of the training rows and select on the other 2,500
(`VALIDATION_ROWS`, drawn with a fixed seed); accuracy is on the test split. Parts (`--parts`):
  - `tfidf`: TF-IDF word 1-2 grams + logistic regression (`bench_text_classification.tfidf_baseline`): on
    IMDB, C chosen on the 2,500 held-out rows, then refitted on all 25,000 training rows; on SST-2, as
    bench_text_classification (train.tsv, C on validation.tsv, accuracy on dev.tsv).
  - `imdb_scratch`: `TextClassifier` from scratch, `suite/text/configs/text_classification_imdb.yaml`.
  - `imdb_from`: fine-tuned from the saved task `--pretrained-task` (a `MaskedLMPretrainer` folder, e.g.
    pretrained on `imdb/reviews.txt.gz`) with `init_from`, which brings its vocabulary and backbone. Every
    pretrained encoder fine-tunes with the same recipe, text_classification_imdb_pretrained.yaml (BERT's:
    small learning rate, warm-up then linear decay), not with the from-scratch config's lr 1e-3; when the
    pretrainer continued a checkpoint (its config names `pretrained`, e.g. a MiniLM) the row is called
    `minilm_continued`, and `imdb_minilm` alone also runs it.
  - `imdb_minilm`: all-MiniLM-L6-v2 fine-tuned, `suite/text/configs/text_classification_imdb_pretrained.yaml`.
  - `sst2_scratch`: SST-2 dev accuracy of the classifier from scratch (text_classification.yaml).
  - `sst2_from`: SST-2 dev accuracy fine-tuned from `--pretrained-task` with text_classification_pretrained.yaml
    (the same pretrained-encoder recipe), as bench_text_classification does.
`--set KEY=VALUE` overrides the fine-tuning config of `imdb_from` and `sst2_from` (e.g. a learning rate).
Every Transformer runs once per `--seeds` (mean and spread reported). The IMDB test accuracy of every model
is on the same clean test rows: those whose text is not a line of `imdb/reviews.txt.gz`, the MLM corpus
(389 distinct texts, README), so that a model pretrained on it is not scored on reviews it has read;
models that never saw the corpus also report accuracy on all 25,000 (SST-2's dev set holds no review
sentence, README). Each IMDB Transformer reports how much of the test reviews truncation kept (word pieces
and reviews cut), its parameters, its wall-clock and CPU training seconds and training examples/s (epochs
run x training rows / wall seconds of everything `train` does: vocabulary, compiling, validation).
Prints one JSON object on stdout (and writes it to `--output`).

    python benchmarks/bench_imdb.py --parts tfidf imdb_scratch
    python benchmarks/bench_imdb.py --parts imdb_from sst2_from --pretrained-task runs/imdb_mlm/task
    python benchmarks/bench_imdb.py --quick        # every part on tiny subsets (a tiny pretrainer if none given)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
import tensorflow_text  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import suite  # noqa: E402
from bench_text_classification import load_splits, over_seeds, tfidf_baseline, train_classifiers  # noqa: E402
from common import (Stopwatch, add_overrides_option, emit, load_average, machine_info,  # noqa: E402
                    mean_and_std, overrides)
from suite.tasks import MaskedLMPretrainer, TextClassifier  # noqa: E402
from suite.text.data import read_text_table  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
PARTS = ("tfidf", "imdb_scratch", "imdb_from", "imdb_minilm", "sst2_scratch", "sst2_from")
NEEDS_TASK = ("imdb_from", "sst2_from")
IMDB_CONFIG = TextClassifier.config_file("text_classification_imdb")
IMDB_PRETRAINED_CONFIG = TextClassifier.config_file("text_classification_imdb_pretrained")
SST2_CONFIG = TextClassifier.config_file()
SST2_PRETRAINED_CONFIG = TextClassifier.config_file("text_classification_pretrained")
TRAIN_ROWS, VALIDATION_ROWS, VALIDATION_SEED = 25_000, 2_500, 0
QUICK_ROWS = {"train": 300, "validation": 100, "test": 300}
QUICK_MINILM_ROWS = {"train": 64, "validation": 32, "test": 64}
TINY_MODEL = {"vocabulary_size": 1000, "backbone.num_layers": 1, "backbone.d_model": 32, "backbone.num_heads": 2,
              "backbone.ff_dim": 64, "epochs": 1}
QUICK_OVERRIDES = {"scratch": {**TINY_MODEL, "bucket_lengths": [32, 64], "backbone.max_length": 64},
                   "minilm": {"epochs": 1, "batch_size": 16},
                   "from_task": {"epochs": 1}}
QUICK_PRETRAIN_REVIEWS = 400


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                        help="default: all (imdb_from and sst2_from only with --pretrained-task or --quick)")
    parser.add_argument("--pretrained-task", type=Path, default=None,
                        help="a saved MaskedLMPretrainer (Task.save folder) for imdb_from and sst2_from")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every Transformer")
    parser.add_argument("--data-dir", type=Path, default=DATASETS, help="folder with imdb/ and sst2/")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few hundred rows, tiny models, one epoch (MiniLM: 64 rows)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity (stderr)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    add_overrides_option(parser)
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}.")
    if args.parts is None:
        args.parts = [p for p in PARTS if p not in NEEDS_TASK or args.pretrained_task or args.quick]
    missing = [p for p in args.parts if p in NEEDS_TASK]
    if missing and args.pretrained_task is None and not args.quick:
        parser.error(f"--parts {' '.join(missing)} fine-tune from --pretrained-task PATH (a saved MaskedLMPretrainer), "
                     "which was not given.")
    if args.pretrained_task is not None and not args.pretrained_task.is_dir():
        parser.error(f"--pretrained-task: expected a saved task folder, got {str(args.pretrained_task)!r} "
                     "(not a folder).")
    return args


def load_imdb(imdb_dir: Path, quick: bool) -> dict[str, pd.DataFrame]:
    """`train` (22,500 rows), `validation` (2,500 held out with `VALIDATION_SEED`), `train_all` (the 25,000
    official training rows) and `test` (25,000) as `text`/`label` tables; `--quick`: `QUICK_ROWS` of each."""
    path = imdb_dir / "labelled.tsv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"--data-dir: {path} is missing; expected IMDB's labelled.tsv.gz (see its README).")
    table = read_text_table(path, text_column="review")
    if len(table) != 2 * TRAIN_ROWS:
        raise ValueError(f"{path}: expected {2 * TRAIN_ROWS} rows (official train, then test), got {len(table)}.")
    train_all, test = table.iloc[:TRAIN_ROWS].reset_index(drop=True), table.iloc[TRAIN_ROWS:].reset_index(drop=True)
    held_out = np.zeros(TRAIN_ROWS, bool)
    held_out[np.random.default_rng(VALIDATION_SEED).permutation(TRAIN_ROWS)[:VALIDATION_ROWS]] = True
    splits = {"train": train_all[~held_out].reset_index(drop=True),
              "validation": train_all[held_out].reset_index(drop=True), "train_all": train_all, "test": test}
    if quick:
        splits = {name: part.sample(QUICK_ROWS[name.removesuffix("_all")], random_state=0).reset_index(drop=True)
                  for name, part in splits.items()}
    return splits


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def texts_in_corpus(texts: list[str], corpus: Path) -> np.ndarray:
    """`(n,)` bool: whether each of `texts` is, verbatim, a line of the gzip corpus `corpus` (one document a
    line). Streams the corpus and compares 16-byte hashes: no corpus line is kept."""
    digests = [_digest(text) for text in texts]
    wanted, found = set(digests), set()
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        for line in lines:
            digest = _digest(line.rstrip("\n"))
            if digest in wanted:
                found.add(digest)
    return np.array([digest in found for digest in digests], bool)


def leakage(test: pd.DataFrame, corpus: Path) -> tuple[np.ndarray, dict]:
    """The test rows to keep (`(n,)` bool, those not in `corpus`) and how many were dropped."""
    leaked = texts_in_corpus(test["text"].tolist(), corpus)
    return ~leaked, {"corpus": str(corpus), "test_rows": len(test), "test_rows_dropped": int(leaked.sum()),
                     "distinct_texts_dropped": len(set(test["text"][leaked])), "test_rows_kept": int((~leaked).sum())}


def truncation_figures(preprocessor, texts: list[str]) -> dict:
    """How much of `texts` the model sees: the word-piece budget between the special tokens, the share of
    all word pieces kept and the share of texts cut."""
    counts = preprocessor.word_piece_counts(texts)
    budget = preprocessor.sequence_length - 1 - preprocessor.separator
    return {"truncation": preprocessor.truncation, "sequence_length": preprocessor.sequence_length,
            "word_piece_budget": budget, "word_pieces_median": int(np.median(counts)) if len(counts) else 0,
            "share_of_word_pieces_kept": round(float(np.minimum(counts, budget).sum() / max(counts.sum(), 1)), 4),
            "share_of_reviews_truncated": round(float((counts > budget).mean()) if len(counts) else 0.0, 4)}


def imdb_tfidf(splits: dict) -> dict:
    """`tfidf_baseline` picks C on the held-out rows (and scores that 22,500-row fit); the chosen C is
    then refitted on all 25,000 training rows (the same vectorizer settings)."""
    selection = tfidf_baseline({"train": splits["train"], "validation": splits["validation"], "dev": splits["test"]})
    with Stopwatch() as watch:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        features = vectorizer.fit_transform(splits["train_all"]["text"])
        labels = splits["train_all"]["label"].astype(int)
        model = LogisticRegression(C=selection["C"], max_iter=2000).fit(features, labels)
    predicted = model.predict(vectorizer.transform(splits["test"]["text"]))
    return {"model": "tfidf_logreg", "correct": predicted == splits["test"]["label"].astype(int).to_numpy(),
            "C": selection["C"], "C_validation_accuracy": selection["C_validation_accuracy"],
            "test_accuracy_all_rows_trained_on_22500": selection["dev_accuracy"],
            "features": len(vectorizer.vocabulary_), "train_rows": len(splits["train_all"]), **watch.as_dict()}


def classifier_run(task: TextClassifier, splits: dict, watch: Stopwatch) -> dict:
    """One trained classifier's figures; `correct` (per test row) is turned into accuracies by `scored`."""
    labels = task.preprocessor.encode_labels(splits["test"]["label"])
    history = task.training_metrics["history"]
    predicted = task.predict(splits["test"]["text"].tolist())["class_id"]
    return {"seed": task.config.training.seed, "correct": predicted == labels,
            "validation_accuracy": round(task.training_metrics["validation"]["accuracy"], 4),
            "epochs_run": len(history["loss"]), "parameters": task.model.count_params(), **watch.as_dict(),
            "train_examples_per_s": round(len(history["loss"]) * len(splits["train"]) / watch.wall, 1)}


def scored(run: dict, keep: np.ndarray, saw_corpus: bool) -> dict:
    """`run` with `correct` replaced by the accuracy on the kept (clean) test rows and, for a model that never
    saw the MLM corpus, on all of them."""
    run = dict(run)
    correct = run.pop("correct")
    figures = {"test_accuracy": round(float(correct[keep].mean()), 4)}
    if not saw_corpus:
        figures["test_accuracy_all_rows"] = round(float(correct.mean()), 4)
    return {**figures, **run}


def over_imdb_seeds(model: str, runs: list[dict], task: TextClassifier, splits: dict, keep: np.ndarray,
                    saw_corpus: bool, config: str) -> dict:
    """A model's row: mean and spread of its test accuracy over the seeds, its size, time and truncation."""
    runs = [scored(run, keep, saw_corpus) for run in runs]
    mean, std = mean_and_std(run["test_accuracy"] for run in runs)
    return {"model": model, "config": config, "test_accuracy": mean, "test_accuracy_std": std,
            "parameters": runs[0]["parameters"],
            "train_seconds_mean": round(statistics.mean(run["train_seconds"] for run in runs), 1),
            "train_examples_per_s_mean": round(statistics.mean(run["train_examples_per_s"] for run in runs), 1),
            "pretrained_on_mlm_corpus": saw_corpus,
            "truncation_on_test": truncation_figures(task.preprocessor, splits["test"]["text"].tolist()),
            "runs": runs}


def train_imdb(model: str, splits: dict, keep: np.ndarray, config, seeds: list[int], verbose: int,
               init_from=None, config_name: str = "") -> dict:
    """`TextClassifier.train` on the IMDB training rows, selected on the held-out ones, once per seed."""
    runs = []
    for seed in seeds:
        with Stopwatch() as watch:
            task = TextClassifier.train(splits["train"], config, validation_data=splits["validation"],
                                        init_from=init_from, seed=seed, verbose=verbose)
        runs.append(classifier_run(task, splits, watch))
    return over_imdb_seeds(model, runs, task, splits, keep, init_from is not None, config_name)


def continued_checkpoint(pretrainer) -> bool:
    """Whether the pretrainer continued a pretrained checkpoint (its config names one, e.g. a MiniLM)."""
    return getattr(pretrainer.config, "pretrained", None) is not None


def from_task_config(path: Path, quick: bool, changes: dict):
    """The config that fine-tunes a pretrainer (`init_from`): the pretrained-encoder recipe `path`, without
    its `pretrained` (`init_from` brings the encoder), `changes` (`--set`) on top."""
    changes = {**(QUICK_OVERRIDES["from_task"] if quick else {}), **changes, "pretrained": None}
    return TextClassifier.resolve_config(path, changes)


def quick_pretrainer(corpus: Path, workdir: Path):
    """For `--quick` without `--pretrained-task`: a tiny MaskedLMPretrainer on the corpus's first
    `QUICK_PRETRAIN_REVIEWS` lines, saved and loaded back as `--pretrained-task` would be."""
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        texts = [line.rstrip("\n") for line in itertools.islice(lines, QUICK_PRETRAIN_REVIEWS)]
    pretrainer = MaskedLMPretrainer.train(texts, None, verbose=0, bucket_lengths=[32, 64],
                                          **{**TINY_MODEL, "backbone.max_length": 64})
    return pretrainer.save(workdir / "quick_pretrainer")


def main(argv=None) -> dict:
    args = parse_args(argv)
    corpus = args.data_dir / "imdb" / "reviews.txt.gz"
    result = {"benchmark": "imdb_sst2_text_classification",
              "machine": machine_info(tensorflow_text=tensorflow_text.__version__, keras_hub=keras_hub.__version__,
                                      scikit_learn=sklearn.__version__),
              "config": {"quick": args.quick, "parts": args.parts, "seeds": args.seeds, "overrides": args.overrides,
                         "pretrained_task": None if args.pretrained_task is None else str(args.pretrained_task)},
              "load_average_start": load_average()}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as workdir:
        pretrainer = None
        if set(NEEDS_TASK) & set(args.parts) or (args.pretrained_task and "imdb_minilm" in args.parts):
            path = args.pretrained_task or quick_pretrainer(corpus, Path(workdir))
            pretrainer = suite.load(path)
            result["config"]["pretrainer"] = {"path": str(path), "task": type(pretrainer).__name__,
                                              "continued_checkpoint": continued_checkpoint(pretrainer)}
        if any(part == "tfidf" or part.startswith("imdb_") for part in args.parts):
            splits = load_imdb(args.data_dir / "imdb", args.quick)
            keep, result["imdb_leakage"] = leakage(splits["test"], corpus)
            result["imdb_sizes"] = {name: len(part) for name, part in splits.items()}
            models = result["imdb"] = {}
        if "tfidf" in args.parts:
            models["tfidf_logreg"] = scored(imdb_tfidf(splits), keep, saw_corpus=False)
            result["sst2_tfidf_logreg"] = tfidf_baseline(load_splits(args.data_dir / "sst2", args.quick))
        if "imdb_scratch" in args.parts:
            config = TextClassifier.resolve_config(IMDB_CONFIG, QUICK_OVERRIDES["scratch"] if args.quick else None)
            models["scratch"] = train_imdb("scratch", splits, keep, config, args.seeds, args.verbose,
                                           config_name=str(IMDB_CONFIG.relative_to(REPO)))
        if "imdb_minilm" in args.parts:
            minilm = {name: part.iloc[:QUICK_MINILM_ROWS[name.removesuffix("_all")]] for name, part in splits.items()
                      } if args.quick else splits
            config = TextClassifier.resolve_config(IMDB_PRETRAINED_CONFIG,
                                                   QUICK_OVERRIDES["minilm"] if args.quick else None)
            models["minilm"] = train_imdb("minilm", minilm, keep[:len(minilm["test"])], config, args.seeds,
                                          args.verbose, config_name=str(IMDB_PRETRAINED_CONFIG.relative_to(REPO)))
        continued = pretrainer is not None and continued_checkpoint(pretrainer)
        if "imdb_from" in args.parts or ("imdb_minilm" in args.parts and continued):
            name = "minilm_continued" if continued else "from_task"
            config = from_task_config(IMDB_PRETRAINED_CONFIG, args.quick, overrides(args.overrides))
            models[name] = train_imdb(name, splits, keep, config, args.seeds, args.verbose, init_from=pretrainer,
                                      config_name=str(IMDB_PRETRAINED_CONFIG.relative_to(REPO)))
        if "sst2_scratch" in args.parts:
            sst2 = load_splits(args.data_dir / "sst2", args.quick)
            config = TextClassifier.resolve_config(SST2_CONFIG, QUICK_OVERRIDES["scratch"] if args.quick else None)
            fit = {"validation_data": sst2["validation"], "verbose": args.verbose}
            runs = [figures for _, figures in train_classifiers(sst2, config, args.seeds, fit)]
            result["sst2_scratch"] = {"config": str(SST2_CONFIG.relative_to(REPO)), **over_seeds(runs)}
        if "sst2_from" in args.parts:
            sst2 = load_splits(args.data_dir / "sst2", args.quick)
            config = from_task_config(SST2_PRETRAINED_CONFIG, args.quick, overrides(args.overrides))
            fit = {"validation_data": sst2["validation"], "verbose": args.verbose}
            runs = [figures for _, figures in train_classifiers(sst2, config, args.seeds, fit, init_from=pretrainer)]
            result["sst2_from_task"] = {"config": str(SST2_PRETRAINED_CONFIG.relative_to(REPO)), **over_seeds(runs)}
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
