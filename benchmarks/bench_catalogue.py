"""Recommendation at catalogue scale: sampled vs full softmax on Amazon Sports (18k items), exact vs
approximate top-k, and a generated catalogue of 1M items.

`sports`: reads `../shared/datasets/amazon/Sports_and_Outdoors.txt.gz` (leave-one-out), measures the
training step of both losses on the same batches (interleaved rounds, median), then trains each for
the same wall-clock budget (`training.max_seconds`; the epochs the measured step time fits in the
budget set the learning-rate schedule; the best epoch by validation loss is kept) and ranks every user's last item
against the full catalogue (seen items excluded), beside most-popular and co-occurrence. Then the
approximate index (faiss HNSW) of the sampled model against exact top-10: recall@10 and query time.
`synthetic`: `synthetic_interactions` with 1M items; one epoch with the `auto` loss (sampled
softmax, LazyAdamW), evaluated on `--eval-users` users; peak memory (ru_maxrss), time per epoch and
the approximate index's recall@10 on those users.
`optimizers`: the step time on that catalogue with AdamW's dense update of the item table and with
LazyAdamW (interleaved rounds, same batches).
Prints one JSON object on stdout.

    python benchmarks/bench_catalogue.py --part sports --budget 600
    python benchmarks/bench_catalogue.py --part synthetic
    python benchmarks/bench_catalogue.py --part optimizers
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from common import Stopwatch, emit, load_average, machine_info  # noqa: E402
from suite.core.optim import adamw  # noqa: E402
from suite.recommendation.data import HeldOut  # noqa: E402
from suite.recommendation.synthetic import synthetic_interactions  # noqa: E402
from suite.recommendation.task import Recommender  # noqa: E402

SPORTS = ROOT.parent / "shared" / "datasets" / "amazon" / "Sports_and_Outdoors.txt.gz"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("sports", "synthetic", "optimizers"), required=True)
    parser.add_argument("--data", type=Path, default=SPORTS)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per loss (sports)")
    parser.add_argument("--step-rounds", type=int, default=5, help="interleaved rounds of 10 steps per loss")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--eval-users", type=int, default=5_000)
    parser.add_argument("--verbose", type=int, default=0)
    return parser.parse_args(argv)


def peak_memory_gib() -> float:
    """The process's peak resident memory so far (ru_maxrss), GiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def step_milliseconds(tasks: dict, batches: list, rounds: int) -> dict:
    """Median ms per training step of each task on the same batches, rounds interleaved."""
    times = {name: [] for name in tasks}
    for round_ in range(rounds + 1):
        for name, task in tasks.items():
            data = batches[name]
            start = time.perf_counter()
            for inputs, targets in data:
                task.model.train_on_batch(inputs, targets)
            if round_:  # the first round compiles
                times[name].append((time.perf_counter() - start) / len(data) * 1000)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def sports(args) -> dict:
    if not args.data.is_file():
        raise SystemExit(f"Amazon Sports not found at {args.data}")
    config = Recommender.resolve_config(None, {"data.train": str(args.data)})
    interactions = Recommender.read(config.data.train, config)
    parts = Recommender.data_parts(config, interactions)
    steps_per_epoch = len(parts["train"]) // config.training.batch_size
    losses = ("softmax", "sampled_softmax")
    configs = {loss: dataclasses.replace(config, loss=loss) for loss in losses}
    tasks = {loss: Recommender.create(parts["train"], configs[loss]) for loss in losses}
    batches = {}
    for loss, task in tasks.items():
        task.compile(steps_per_epoch)
        batches[loss] = list(task.dataset(parts["train"], training=True).take(10))
    step_ms = step_milliseconds(tasks, batches, args.step_rounds)
    runs = {}
    for loss in losses:
        epochs = math.ceil(args.budget / (step_ms[loss] / 1000 * steps_per_epoch))
        run_config = dataclasses.replace(configs[loss], training=dataclasses.replace(
            config.training, epochs=epochs, max_seconds=args.budget))
        with contextlib.redirect_stdout(sys.stderr), Stopwatch() as training:
            task = Recommender.train(interactions, run_config, verbose=args.verbose)
        with Stopwatch() as evaluation:
            test = task.evaluate(interactions)
        runs[loss] = {"epochs_planned": epochs, "epochs_run": task.training_metrics["epochs_run"],
                      "best_epoch": task.training_metrics["best_epoch"],
                      "train_seconds": task.training_metrics["train_seconds"], "train_cpu_seconds": training.cpu,
                      "evaluation_seconds": evaluation.wall, "test": test,
                      "validation": task.training_metrics["validation"]}
    runs["approximate_index"] = approximate_recall(task, parts["test"])
    users, vocabulary = runs["softmax"]["test"]["users"], task.preprocessor.vocabulary_size
    return {
        "data": {"events": len(interactions), "users": users, "items": vocabulary - 2,
                 "steps_per_epoch": steps_per_epoch},
        "step_ms": step_ms,
        "full_over_sampled_step": round(step_ms["softmax"] / step_ms["sampled_softmax"], 2),
        "runs": runs,
        "memory": {"peak_rss_gib": peak_memory_gib(),
                   "dense_users_by_items_float32_gib": round(users * vocabulary * 4 / 2**30, 2)},
    }


def approximate_recall(task: Recommender, test: HeldOut, k: int = 10) -> dict:
    """Recall@k of `recommend(approximate=True)` against exact top-k, every test user."""
    histories = [[*history] for history in test.examples["history"]]
    with Stopwatch() as build:
        task.build_index()
    with Stopwatch() as exact_watch:
        exact = task.recommend(histories, k=k)["item_ids"]
    with Stopwatch() as approximate_watch:
        approximate = task.recommend(histories, k=k, approximate=True)["item_ids"]
    recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(approximate, exact)])
    return {"recall@10": round(float(recall), 4), "users": len(histories), "build_seconds": build.wall,
            "exact_seconds": exact_watch.wall, "approximate_seconds": approximate_watch.wall}


def synthetic_parts(args, config) -> tuple:
    """The generated interactions, read and split."""
    interactions = Recommender.read(synthetic_interactions(args.users, args.items), config)
    return interactions, Recommender.data_parts(config, interactions)


def optimizers(args) -> dict:
    """Step time of the sampled loss on the generated catalogue with AdamW's dense update of the item
    table and with LazyAdamW, on the same batches."""
    config = Recommender.resolve_config(None, {"training.epochs": 1})
    _, parts = synthetic_parts(args, config)
    tasks, batches = {}, {}
    for lazy in (False, True):
        name = "LazyAdamW" if lazy else "AdamW"
        tasks[name] = Recommender.create(parts["train"], config)
        tasks[name].model.compile(optimizer=adamw(config.training, config.training.learning_rate, Recommender.no_decay,
                                                  lazy=lazy, **Recommender.optimizer_options), jit_compile=True)
        batches[name] = list(tasks[name].dataset(parts["train"], training=True).take(10))
    step_ms = step_milliseconds(tasks, batches, args.step_rounds)
    return {"data": {"items": args.items, "users": args.users}, "loss": tasks["AdamW"].model.item_loss,
            "step_ms": step_ms, "dense_over_lazy_step": round(step_ms["AdamW"] / step_ms["LazyAdamW"], 2)}


def synthetic(args) -> dict:
    config = Recommender.resolve_config(None, {"training.epochs": 1})
    with Stopwatch() as reading:
        interactions, parts = synthetic_parts(args, config)
    rng = np.random.default_rng(0)
    split = parts["test"].split
    sample = {part: getattr(split, part).iloc[np.sort(rng.choice(len(split.test), args.eval_users, replace=False))]
              for part in ("validation", "test")}
    held_out = dataclasses.replace(split, **sample)
    with Stopwatch() as creation:
        task = Recommender.create(parts["train"], config)
    with contextlib.redirect_stdout(sys.stderr), Stopwatch() as training:
        task.training_metrics = task.fit(parts["train"], HeldOut(interactions, held_out, "validation"),
                                         verbose=args.verbose)
    with Stopwatch() as evaluation:
        test = task.metrics(HeldOut(interactions, held_out, "test"))
    index = approximate_recall(task, HeldOut(interactions, held_out, "test"))
    return {
        "data": {"events": len(interactions), "users": args.users, "items": task.preprocessor.vocabulary_size - 2,
                 "training_sequences": len(parts["train"]), "evaluated_users": args.eval_users},
        "loss": task.model.item_loss,
        "parameters": task.model.count_params(),
        "seconds": {"generate_read_and_split": reading.wall, "vocabulary_and_model": creation.wall,
                    "epoch_including_validation_loss": training.wall, "evaluation": evaluation.wall},
        "train_cpu_seconds": training.cpu,
        "test": test,
        "approximate_index": index,
        "memory": {"peak_rss_gib": peak_memory_gib(),
                   "dense_users_by_items_float32_gib": round(args.users * args.items * 4 / 2**30, 1),
                   "dense_items_by_items_float32_gib": round(args.items**2 * 4 / 2**30, 1)},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_info(load_average_start=load_average())
    result = {"sports": sports, "synthetic": synthetic, "optimizers": optimizers}[args.part](args)
    emit({"benchmark": f"catalogue scale: {args.part}", "machine": {**machine, "load_average_end": load_average()},
          **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
