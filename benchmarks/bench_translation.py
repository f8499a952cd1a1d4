"""Multi30k en->de: quality by wall-clock training time, training speed, and decoding speed.

Trains the default config (`suite/translation/configs/translation.yaml`) for `--budget-minutes` of training
time (evaluation pauses are not counted), evaluating greedy BLEU/chrF on the first
`--eval-sentences` validation pairs every `--eval-every-minutes`. Then reports full-validation
BLEU/chrF (greedy and beam) and times decoding of `--decode-sentences` validation sentences:
our XLA-compiled greedy and beam search against `keras_hub.samplers.GreedySampler` and
`BeamSampler` driving the same model through a `next(prompt, cache, index)` wrapper around the
same `decode_step`, also XLA-compiled. Decoders are timed interleaved over `--repetitions`
rounds; the best round counts (the machine is shared). Prints one JSON object on stdout.

    python benchmarks/bench_translation.py --budget-minutes 60
    python benchmarks/bench_translation.py --quick      # bundled sample, tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import sacrebleu  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import emit, load_average, machine_info  # noqa: E402
from suite.translation.preprocessor import END_ID, PAD_ID, START_ID  # noqa: E402
from suite.translation.decoding import allowed_log_probs  # noqa: E402
from suite.translation.task import Translator  # noqa: E402

QUICK = {
    "data.train": "data/translation/train.tsv", "data.validation": "data/translation/valid.tsv",
    "vocabulary_size": 300, "max_source_length": 24, "max_target_length": 24, "num_buckets": 2,
    "warmup_steps": 20, "backbone.num_layers": 1, "backbone.d_model": 32, "backbone.num_heads": 2,
    "backbone.ff_dim": 64, "training.batch_size": 32,
}


class TrainingBudget(keras.callbacks.Callback):
    """Stops training after `seconds` of training time; every `every` seconds of it, pauses to
    run `evaluate()` (not counted) and records the result with the time and step."""

    def __init__(self, seconds: float, every: float, evaluate):
        super().__init__()
        self.seconds, self.every, self.evaluate = seconds, every, evaluate
        self.curve: list[dict] = []
        self.steps = 0
        self.step_times: list[float] = []

    def on_train_begin(self, logs=None):
        self.start, self.paused, self.next_eval = time.perf_counter(), 0.0, self.every

    @property
    def trained(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        trained = self.trained
        self.step_times.append(trained)
        if trained >= self.next_eval or trained >= self.seconds:
            pause = time.perf_counter()
            self.curve.append({"minutes": round(trained / 60, 2), "steps": self.steps, **self.evaluate()})
            print(json.dumps(self.curve[-1]), file=sys.stderr, flush=True)
            self.paused += time.perf_counter() - pause
            self.next_eval += self.every
        if trained >= self.seconds:
            self.model.stop_training = True


def keras_hub_decoder(model, sampler, max_length: int):
    """XLA-compiled `sampler` over `model.decode_step`: source ids -> `(batch, max_length)` tokens."""

    def next_logits(prompt, cache, index):
        step = index - 1
        token = tf.slice(prompt, [0, step], [tf.shape(prompt)[0], 1])
        logits, updated = model.decode_step(token, {"self": cache["self"], "cross": cache["cross"]}, step, cache["mask"])
        # The same [PAD]/[START] ban as ours, so greedy outputs can match token for token.
        return allowed_log_probs(logits[:, 0]), None, {**updated, "mask": cache["mask"]}

    @tf.function(jit_compile=True, autograph=False)
    def run(source_ids):
        encoded, mask = model.encode(source_ids)
        cache = {**model.init_cache(encoded, max_length), "mask": mask}
        batch = tf.shape(source_ids)[0]
        prompt = tf.concat([tf.fill([batch, 1], START_ID), tf.zeros([batch, max_length], tf.int32)], axis=1)
        prompt_mask = tf.range(max_length + 1)[None, :] == 0
        tokens = sampler(next_logits, prompt, cache, index=1, mask=tf.tile(prompt_mask, [batch, 1]),
                         stop_token_ids=[END_ID])
        return tokens[:, 1:]

    return run


def until_end(tokens: np.ndarray) -> list[tuple[int, ...]]:
    rows = []
    for row in tokens.tolist():
        rows.append(tuple(row[: row.index(END_ID) + 1] if END_ID in row else row))
    return rows


def time_decoders(task: Translator, sources: list[str], batch_size: int, beam_width: int, repetitions: int) -> dict:
    model, max_length = task.model, task._decoding(None, None, None, None)[1]
    penalty = task.config.decoding.length_penalty
    batches = [task.source_ids(sources[i : i + batch_size]) for i in range(0, len(sources), batch_size)]
    batches = [b for b in batches if b.shape[0] == batch_size]
    greedy_hub = keras_hub_decoder(model, keras_hub.samplers.GreedySampler(), max_length)
    beam_hub = keras_hub_decoder(model, keras_hub.samplers.BeamSampler(num_beams=beam_width), max_length)
    decoders = {
        "ours_greedy": lambda ids: task._decoder(ids, max_length, 1, penalty)["token_ids"],
        "keras_hub_greedy": greedy_hub,
        f"ours_beam{beam_width}": lambda ids: task._decoder(ids, max_length, beam_width, penalty)["token_ids"],
        f"keras_hub_beam{beam_width}": beam_hub,
    }
    outputs, best = {}, {name: float("inf") for name in decoders}
    for name, fn in decoders.items():  # compile, and keep outputs for agreement
        outputs[name] = [until_end(fn(ids).numpy()) for ids in batches]
    for _ in range(repetitions):
        for name, fn in decoders.items():
            start = time.perf_counter()
            for ids in batches:
                fn(ids).numpy()
            best[name] = min(best[name], time.perf_counter() - start)
    sentences = batch_size * len(batches)
    result = {name: {"sentences_per_s": round(sentences / seconds, 2), "seconds": round(seconds, 3)}
              for name, seconds in best.items()}
    ours, hub = outputs["ours_greedy"], outputs["keras_hub_greedy"]
    same = sum(a == b for x, y in zip(ours, hub) for a, b in zip(x, y))
    return {
        "sentences": sentences, "batch_size": batch_size, "max_length": max_length, "decoders": result,
        "greedy_identical_to_keras_hub": round(same / sentences, 4),
        "beam_speedup_vs_keras_hub": round(best[f"keras_hub_beam{beam_width}"] / best[f"ours_beam{beam_width}"], 2),
        "greedy_speedup_vs_keras_hub": round(best["keras_hub_greedy"] / best["ours_greedy"], 2),
    }


def steady_tokens_per_s(step_times: list[float], tokens_per_step: float) -> float:
    """Tokens/s over the second half of the steps (XLA compiles each bucket shape early on)."""
    half = len(step_times) // 2
    if len(step_times) - half < 2:
        return float("nan")
    return round(tokens_per_step * (len(step_times) - 1 - half) / (step_times[-1] - step_times[half]), 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Translator.config_file()))
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--eval-every-minutes", type=float, default=10.0)
    parser.add_argument("--eval-sentences", type=int, default=300)
    parser.add_argument("--final-sentences", type=int, default=None, help="validation pairs for the final "
                        "greedy and beam scores (default: all)")
    parser.add_argument("--decode-sentences", type=int, default=256)
    parser.add_argument("--decode-batch", type=int, default=32)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="bundled sample, tiny model, 0.3 minutes")
    args = parser.parse_args(argv)
    overrides = dict(QUICK) if args.quick else {}
    if args.quick:
        args.budget_minutes, args.eval_every_minutes, args.decode_sentences, args.decode_batch = 0.3, 0.15, 32, 16
    os.chdir(ROOT)
    machine = machine_info(keras_hub=keras_hub.__version__, load_average_before=load_average())
    config = Translator.resolve_config(args.config, overrides)
    keras.utils.set_random_seed(config.training.seed)
    train, validation = Translator.read(config.data.train, config), Translator.read(config.data.validation, config)
    task = Translator.create(train, config)
    task.compile(total_steps=config.training.epochs * (len(train) // config.training.batch_size))
    dataset = task.dataset(train, training=True)
    steps_per_epoch = tokens_per_epoch = 0
    for inputs, labels in dataset:
        steps_per_epoch += 1
        tokens_per_epoch += int(tf.reduce_sum(tf.cast(labels != PAD_ID, tf.int32)))
        tokens_per_epoch += int(tf.reduce_sum(tf.cast(inputs["encoder_token_ids"] != PAD_ID, tf.int32)))
    subset = validation.iloc[: args.eval_sentences]

    def quick_eval() -> dict:
        hypotheses = task.translate(subset["source"].tolist(), beam_width=1)
        references = [subset["target"].tolist()]
        return {"bleu_greedy": round(sacrebleu.corpus_bleu(hypotheses, references).score, 2),
                "chrf_greedy": round(sacrebleu.corpus_chrf(hypotheses, references).score, 2)}

    budget = TrainingBudget(args.budget_minutes * 60, args.eval_every_minutes * 60, quick_eval)
    task.model.fit(dataset, epochs=10_000, callbacks=[budget], verbose=0)
    train_seconds = budget.trained
    final = {}
    for width in (1, args.beam_width):
        start = time.perf_counter()
        metrics = task.evaluate(validation.iloc[: args.final_sentences], beam_width=width)
        final[f"beam{width}"] = {k: round(v, 4) for k, v in metrics.items()} | {
            "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(final), file=sys.stderr, flush=True)
    decode = time_decoders(task, validation["source"].tolist()[: args.decode_sentences], args.decode_batch,
                           args.beam_width, args.repetitions)
    parameters = int(sum(np.prod(v.shape) for v in task.model.trainable_weights))
    result = {
        "machine": {**machine, "load_average_after": load_average()},
        "config": {"path": args.config, "quick": args.quick, "overrides": overrides, "parameters": parameters,
                   "source_vocabulary": task.preprocessor.source_vocabulary_size,
                   "target_vocabulary": task.preprocessor.target_vocabulary_size,
                   "train_pairs": len(train), "validation_pairs": len(validation),
                   "final_sentences": len(validation.iloc[: args.final_sentences]),
                   "budget_minutes": args.budget_minutes},
        "training": {"seconds": round(train_seconds, 1), "steps": budget.steps,
                     "epochs": round(budget.steps / steps_per_epoch, 2),
                     "tokens_per_s": round(tokens_per_epoch / steps_per_epoch * budget.steps / train_seconds, 1),
                     "steps_per_s": round(budget.steps / train_seconds, 3),
                     "steady_tokens_per_s": steady_tokens_per_s(budget.step_times, tokens_per_epoch / steps_per_epoch)},
        "curve": budget.curve,
        "validation": final,
        "decoding": decode,
    }
    emit(result)


if __name__ == "__main__":
    main()
