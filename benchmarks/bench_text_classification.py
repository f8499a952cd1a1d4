"""SST-2 sentiment: the Transformer classifier against a TF-IDF baseline, with and without MLM pretraining.

In one run, on `../shared/datasets/sst2/` (train on `train.tsv`, select on `validation.tsv`,
report accuracy on the official dev set `dev.tsv`, 872 sentences):
  - `scratch`: `TextClassifier.train` with the default config `suite/text/configs/text_classification.yaml`;
  - `pretrained`: a `MaskedLMPretrainer` (default config `suite/text/configs/masked_lm.yaml`) trained on the
    unlabeled training sentences, then `TextClassifier.train(..., init_from=pretrainer)`. SST-2's
    training rows are phrases, most of them word spans of longer rows: the WordPiece vocabulary is
    fitted on all rows (as the scratch classifier's), MLM reads each sentence once (`sentences_only`:
    the distinct rows that are not a span of a longer one, about 7,000 of the 64,000 rows);
  - `tfidf_logreg`: scikit-learn TF-IDF (word 1-2 grams) + logistic regression, C chosen on validation.
Each gets its wall-clock and CPU (user + system, this process) training time. `--seeds` repeats the
scratch and the fine-tuned classifier with each training seed (one pretrainer serves them all) and
reports the mean and spread: seeds alone move SST-2 dev accuracy by about one point. The first seed's
fine-tuned model is exported and its SavedModel, loaded with `tf.saved_model.load`, is timed on raw
strings at batch 1 and batch 64 (texts/s, medians over repetitions, after a warm-up call). Prints one
JSON object on stdout (and writes it to `--output` when given).

    python benchmarks/bench_text_classification.py                 # full run
    python benchmarks/bench_text_classification.py --quick         # smoke run: tiny model, 2,000 phrases
    python benchmarks/bench_text_classification.py --pretrain-epochs 2 --output results.json
    python benchmarks/bench_text_classification.py --seeds 0 1 2   # mean and spread over 3 seeds
"""

from __future__ import annotations

import argparse
import contextlib
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

import keras_hub  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from common import Stopwatch, emit, load_average, machine_info, mean_and_std  # noqa: E402
from suite.text.data import maximal_phrases  # noqa: E402
from suite.text.masked_lm import MaskedLMPretrainer  # noqa: E402
from suite.text.classifier import TextClassifier  # noqa: E402

CLASSIFIER_CONFIG = TextClassifier.config_file()
PRETRAIN_CONFIG = MaskedLMPretrainer.config_file()
TFIDF_C = (1.0, 3.0, 10.0)
QUICK_PHRASES = 2000
QUICK_OVERRIDES = {
    "vocabulary_size": 1000,
    "backbone.num_layers": 1,
    "backbone.d_model": 32,
    "backbone.num_heads": 2,
    "backbone.ff_dim": 64,
    "epochs": 1,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets" / "sst2",
                        help="folder with train.tsv, validation.tsv and dev.tsv")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="MLM pretraining epochs (default: the masked_lm config's)")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="classifier epochs, scratch and fine-tuned (default: the config's)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_PHRASES} training phrases, a tiny model, 1 epoch each")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="classifier training seeds, each a scratch and a fine-tuned run (default: the config's)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed repetitions of each serving batch")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help="Keras fit verbosity; progress goes to stderr")
    args = parser.parse_args(argv)
    for name in ("pretrain_epochs", "finetune_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}.")
    if args.repetitions < 1:
        parser.error(f"--repetitions must be >= 1, got {args.repetitions}.")
    return args


def load_splits(data_dir: Path, quick: bool) -> dict[str, pd.DataFrame]:
    """`train`, `validation`, `dev` as `text`/`label` tables (dev.tsv names its text column `content`)."""
    config = TextClassifier.resolve_config(CLASSIFIER_CONFIG)
    splits = {}
    for split in ("train", "validation", "dev"):
        path = data_dir / f"{split}.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"--data-dir: {path} is missing; expected SST-2's train/validation/dev.tsv.")
        splits[split] = TextClassifier.read(str(path), config)
    if quick:
        splits["train"] = splits["train"].sample(QUICK_PHRASES, random_state=0).reset_index(drop=True)
        splits["validation"] = splits["validation"].iloc[:500].reset_index(drop=True)
    return splits


def tfidf_baseline(splits: dict) -> dict:
    """TF-IDF word 1-2 grams (sublinear tf) + logistic regression; C picked on validation."""
    with Stopwatch() as watch:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        features = vectorizer.fit_transform(splits["train"]["text"])
        labels = splits["train"]["label"].astype(int)
        validation = vectorizer.transform(splits["validation"]["text"])
        fits = {c: LogisticRegression(C=c, max_iter=2000).fit(features, labels) for c in TFIDF_C}
        scores = {c: float((m.predict(validation) == splits["validation"]["label"].astype(int)).mean())
                  for c, m in fits.items()}
        best = max(scores, key=scores.get)
    dev = fits[best].predict(vectorizer.transform(splits["dev"]["text"]))
    return {
        "dev_accuracy": round(float((dev == splits["dev"]["label"].astype(int)).mean()), 4),
        "validation_accuracy": round(scores[best], 4),
        "C": best,
        "C_validation_accuracy": {str(c): round(s, 4) for c, s in scores.items()},
        "features": len(vectorizer.vocabulary_),
        **watch.as_dict(),
        "note": "train time covers fitting all C values",
    }


def transformer_figures(task: TextClassifier, splits: dict, watch: Stopwatch) -> dict:
    history = task.training_metrics["history"]
    return {
        "seed": task.config.training.seed,
        "dev_accuracy": round(task.evaluate(splits["dev"])["accuracy"], 4),
        "validation_accuracy": round(task.training_metrics["validation"]["accuracy"], 4),
        "epochs_run": len(history["loss"]),
        "history": {k: [round(v, 4) for v in vs] for k, vs in history.items()},
        "parameters": task.model.count_params(),
        **watch.as_dict(),
    }


def serving_throughput(saved_model_dir: Path, texts: list[str], repetitions: int) -> dict:
    """Texts/s through `serving_default` of the loaded SavedModel at batch 1 and 64 (medians)."""
    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    figures = {}
    for batch_size, calls in ((1, 64), (64, 8)):
        batches = [tf.constant(texts[i * batch_size:(i + 1) * batch_size]) for i in range(calls)]
        serve(text=batches[0])
        rates = []
        for _ in range(repetitions):
            start = time.perf_counter()
            for batch in batches:
                serve(text=batch)["class_id"].numpy()
            rates.append(calls * batch_size / (time.perf_counter() - start))
        figures[f"batch_{batch_size}"] = {
            "texts_per_s_median": round(statistics.median(rates), 1),
            "texts_per_s_min": round(min(rates), 1),
            "texts_per_s_max": round(max(rates), 1),
            "ms_per_call_median": round(1000 * batch_size / statistics.median(rates), 2),
        }
    return figures


def over_seeds(runs: list[dict]) -> dict:
    """The first run's figures, its dev accuracy replaced by the mean over all runs; the other runs'
    figures under `other_seeds`."""
    mean, std = mean_and_std(run["dev_accuracy"] for run in runs)
    return {
        **runs[0],
        "dev_accuracy": mean,
        "dev_accuracy_std": std,
        "dev_accuracy_by_seed": {str(run["seed"]): run["dev_accuracy"] for run in runs},
        "other_seeds": runs[1:],
    }


def train_classifiers(splits: dict, config, seeds: list[int], fit: dict, init_from=None) -> list:
    """One `TextClassifier.train` per seed: `[(task, figures), ...]`."""
    trained = []
    for seed in seeds:
        with Stopwatch() as watch:
            task = TextClassifier.train(splits["train"], config, init_from=init_from, seed=seed, **fit)
        trained.append((task, transformer_figures(task, splits, watch)))
    return trained


def run_models(splits: dict, classifier_config, pretrain_config, seeds: list[int], verbose: int
               ) -> tuple[dict, TextClassifier]:
    """Figures of the baseline, the scratch and the pretrained-then-fine-tuned classifiers (one of each
    per seed), and the first seed's fine-tuned classifier."""
    fit = {"validation_data": splits["validation"], "verbose": verbose}
    figures = {"tfidf_logreg": tfidf_baseline(splits)}
    figures["scratch"] = over_seeds([f for _, f in train_classifiers(splits, classifier_config, seeds, fit)])

    with Stopwatch() as pretrain_watch:
        pretrainer = MaskedLMPretrainer.train(splits["train"][["text"]], pretrain_config, verbose=verbose)
    texts = splits["train"]["text"].tolist()
    mlm_rows = len(maximal_phrases(texts)) if pretrain_config.sentences_only else len(texts)
    finetuned = train_classifiers(splits, classifier_config, seeds, fit, init_from=pretrainer)
    first = finetuned[0][1]
    history = pretrainer.training_metrics["history"]
    figures["pretrained"] = {
        **over_seeds([f for _, f in finetuned]),
        "pretrain": {
            **pretrain_watch.as_dict(),
            "sentences_only": pretrain_config.sentences_only,
            "mlm_rows": mlm_rows,
            "epochs_run": len(history["loss"]),
            "final_mlm_loss": round(history["loss"][-1], 4),
            "final_mlm_accuracy": round(history["accuracy"][-1], 4),
        },
        "total_train_seconds": round(pretrain_watch.wall + first["train_seconds"], 2),
        "total_train_cpu_seconds": round(pretrain_watch.cpu + first["train_cpu_seconds"], 2),
    }
    return figures, finetuned[0][0]


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = machine_info(tensorflow_text=tensorflow_text.__version__, keras_hub=keras_hub.__version__,
                           scikit_learn=sklearn.__version__)
    result = {"benchmark": "sst2_text_classification", "machine": machine, "load_average_start": load_average()}
    splits = load_splits(args.data_dir, args.quick)
    classifier_overrides = dict(QUICK_OVERRIDES) if args.quick else {}
    pretrain_overrides = dict(QUICK_OVERRIDES) if args.quick else {}
    if args.finetune_epochs is not None:
        classifier_overrides["epochs"] = args.finetune_epochs
    if args.pretrain_epochs is not None:
        pretrain_overrides["epochs"] = args.pretrain_epochs
    pretrain_config = MaskedLMPretrainer.resolve_config(PRETRAIN_CONFIG if PRETRAIN_CONFIG.is_file() else None,
                                                        pretrain_overrides)
    classifier_config = TextClassifier.resolve_config(CLASSIFIER_CONFIG, classifier_overrides)
    seeds = args.seeds or [classifier_config.training.seed]
    result["config"] = {
        "quick": args.quick,
        "classifier_config": str(CLASSIFIER_CONFIG.relative_to(REPO)),
        "pretrain_config": str(PRETRAIN_CONFIG.relative_to(REPO)) if PRETRAIN_CONFIG.is_file() else "defaults",
        "overrides": {"classifier": classifier_overrides, "pretrain": pretrain_overrides},
        "classifier_epochs": classifier_config.training.epochs,
        "pretrain_epochs": pretrain_config.training.epochs,
        "seeds": seeds,
        "sizes": {name: len(table) for name, table in splits.items()},
    }
    with contextlib.redirect_stdout(sys.stderr):
        figures, finetuned = run_models(splits, classifier_config, pretrain_config, seeds, args.verbose)
    result["figures"] = figures

    with tempfile.TemporaryDirectory() as export_dir:
        path = finetuned.export(export_dir, "sst2")
        texts = splits["dev"]["text"].tolist() * 2
        result["serving"] = {"model": "pretrained", "signature": "serving_default",
                             "input": "raw dev sentences", "jit_compile": False,
                             **serving_throughput(path, texts, args.repetitions)}
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
