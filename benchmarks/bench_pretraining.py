"""Masked-LM pretraining at corpus scale on the 75,000 unlabeled IMDB reviews (`imdb/reviews.txt.gz`).

Parts (`--parts`, default all):
  - `packing`: training tokens/s of one model on packed rows against the same model on padded
    sentences, in one run: the sentences of `--documents` reviews (split at `.`, `!`, `?`), one
    sentence a row, padded to length buckets (16/32/64/128, as the library pads) and to a fixed 128
    (BERT's static shape), against the same reviews packed into full 128-token rows. Only real
    tokens are counted; each variant's batches are cached and compiled before they are timed.
  - `pretrain`: `MaskedLMPretrainer.run` with `--config` (default `masked_lm_imdb`: from scratch)
    into `--output-dir`; the trained task lands in `<output-dir>/task`, for
    `bench_imdb.py --pretrained-task`. `--resume` continues a killed run.
  - `continue`: the same with `masked_lm_imdb_minilm` (continued pretraining of all-MiniLM-L6-v2).
Prints one JSON object (and writes it to `--output`).

    python benchmarks/bench_pretraining.py --parts packing
    python benchmarks/bench_pretraining.py --parts pretrain --output-dir runs/mlm_imdb
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402

from common import add_overrides_option, emit, load_average, machine_info, overrides  # noqa: E402
from suite.tasks import MaskedLMPretrainer  # noqa: E402
from suite.text.corpus import TextCorpus  # noqa: E402

REVIEWS = REPO.parent / "shared" / "datasets" / "imdb" / "reviews.txt.gz"
PARTS = ("packing", "pretrain", "continue")
CONFIGS = {"pretrain": "masked_lm_imdb", "continue": "masked_lm_imdb_minilm"}


def sentences(reviews: list[str]) -> list[str]:
    return [s for review in reviews for s in re.split(r"(?<=[.!?])\s+", review) if s.strip()]


def timed_tokens_per_second(task: MaskedLMPretrainer, texts, steps: int) -> dict:
    """Real (non-padding) tokens/s of `steps` training steps on cached batches, compiled beforehand."""
    batches = task.dataset(texts, training=True).take(steps).cache()
    real = sum(int(tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32))) for inputs, _, _ in batches)
    slots = sum(int(tf.size(inputs["padding_mask"])) for inputs, _, _ in batches)
    count = sum(1 for _ in batches)
    task.model.fit(batches, verbose=0)
    start = time.perf_counter()
    task.model.fit(batches, verbose=0)
    seconds = time.perf_counter() - start
    return {"steps": count, "real_tokens": real, "padding_share": round(1 - real / slots, 4),
            "seconds": round(seconds, 2), "real_tokens_per_second": round(real / seconds, 1)}


def packing_part(args) -> dict:
    corpus = TextCorpus.read(REVIEWS)
    reviews = corpus.sample(args.documents)
    base = MaskedLMPretrainer.resolve_config(CONFIGS["pretrain"], overrides(args.overrides))
    preprocessor = MaskedLMPretrainer.fit_preprocessor(corpus, base)
    variants = {
        "packed_128": ({"packing": True, "bucket_lengths": [128]}, reviews),
        "sentences_bucketed": ({"packing": False, "bucket_lengths": [16, 32, 64, 128]}, sentences(reviews)),
        "sentences_padded_128": ({"packing": False, "bucket_lengths": [128]}, sentences(reviews)),
    }
    figures = {}
    for name, (changes, texts) in variants.items():
        config = MaskedLMPretrainer.resolve_config(base, changes)
        variant_preprocessor = type(preprocessor).from_config(
            {**preprocessor.get_config(), "bucket_lengths": config.bucket_lengths})
        task = MaskedLMPretrainer(MaskedLMPretrainer.build_model(variant_preprocessor, config), variant_preprocessor,
                                  config)
        task.compile_in_scope(total_steps=1000, build_optimizer=True)
        data = MaskedLMPretrainer.read(texts, config)
        figures[name] = {"rows_of": "reviews" if config.packing else "sentences", "texts": len(texts),
                         **timed_tokens_per_second(task, data, args.steps)}
    packed = figures["packed_128"]["real_tokens_per_second"]
    return {"documents": len(reviews), "params": task.model.count_params(), **figures,
            "ratio_packed_to_bucketed": round(packed / figures["sentences_bucketed"]["real_tokens_per_second"], 2),
            "ratio_packed_to_padded_128": round(packed / figures["sentences_padded_128"]["real_tokens_per_second"], 2)}


def run_part(part: str, args) -> dict:
    config = MaskedLMPretrainer.resolve_config(args.config or CONFIGS[part], overrides(args.overrides))
    output_dir = Path(args.output_dir or f"runs/{CONFIGS[part]}")
    task, metrics = MaskedLMPretrainer.run(config, output_dir, resume=args.resume, verbose=args.verbose)
    history = metrics["history"]
    return {"config": args.config or CONFIGS[part], "task": str(output_dir / "task"),
            "params": task.model.count_params(), "train_seconds": metrics["train_seconds"],
            "epochs_run": metrics["epochs_run"], "steps": int(task.model.optimizer.iterations.numpy()),
            "tokens_per_second": history.get("tokens_per_second"), "validation": metrics.get("validation"),
            "val_accuracy_by_epoch": history.get("val_accuracy"), "data_sizes": metrics["data_sizes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--documents", type=int, default=2000, help="reviews for the packing comparison")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per packing variant")
    parser.add_argument("--config", help="config name or YAML for pretrain/continue")
    parser.add_argument("--output-dir", help="run folder for pretrain/continue (default runs/<config>)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--output", type=Path)
    add_overrides_option(parser)
    args = parser.parse_args()
    if not REVIEWS.is_file():
        raise SystemExit(f"{REVIEWS} is missing: this benchmark needs ../shared/datasets/imdb/.")
    result = {"machine": machine_info(), "load_average_before": load_average()}
    for part in args.parts:
        result[part] = packing_part(args) if part == "packing" else run_part(part, args)
    result["load_average_after"] = load_average()
    emit(result, args.output)


if __name__ == "__main__":
    main()
