"""Serving speed of text SavedModels side by side: `serving_default` at batch 1 and 64 (issue 17).

Each `--export NAME=PATH` is loaded with TensorFlow and TF Text only (as TF Serving runs it, never
`suite`) and answers the same requests: texts of the project's own sample
(data/text_classification/train.csv, varied lengths), batches drawn in a fixed order. The exports
take turns within every round (the order rotates), so a change of machine load hits all of them
alike; each round times `--calls` calls per export and batch size. Printed as one JSON object:
per export and batch size the median and spread of ms per call and texts/s, and for each export
after the first its time divided by the first's, as the median of the same-round ratios
(< 1: faster than the first).

    .venv/bin/python benchmarks/bench_serving.py --export before=PATH --export after=PATH
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the exports use)
from common import emit, load_average, machine_info

BATCH_SIZES = (1, 64)


def request_batches(texts: list[str], batch_size: int, count: int, seed: int = 0) -> list[tf.Tensor]:
    """`count` batches of `batch_size` texts drawn (with a fixed seed) from `texts`."""
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.choice(texts, batch_size)) for _ in range(count)]


def milliseconds_per_call(serve, batches: list[tf.Tensor]) -> float:
    start = time.perf_counter()
    for batch in batches:
        serve(text=batch)
    return (time.perf_counter() - start) * 1000 / len(batches)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", action="append", required=True, metavar="NAME=PATH",
                        help="a text SavedModel folder (repeatable; the first is the reference)")
    parser.add_argument("--texts", default="data/text_classification/train.csv",
                        help="CSV whose `text` column the requests are drawn from")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per export, batch size and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per export and batch size first")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.export):
        parser.error(f"--export takes NAME=PATH, got {args.export}")
    exports = dict(item.split("=", 1) for item in args.export)
    texts = pd.read_csv(args.texts)["text"].astype(str).tolist()
    served = {name: tf.saved_model.load(path).signatures["serving_default"] for name, path in exports.items()}
    batches = {size: request_batches(texts, size, args.calls, seed=size) for size in BATCH_SIZES}
    answers = {}
    for name, serve in served.items():
        for size in BATCH_SIZES:
            for batch in batches[size][: args.warmup]:
                answers[name, size] = serve(text=batch)["probabilities"].numpy()
    times = {(name, size): [] for name in served for size in BATCH_SIZES}
    load_start = load_average()
    for round_index in range(args.rounds):
        order = list(served)[round_index % len(served):] + list(served)[: round_index % len(served)]
        for size in BATCH_SIZES:
            for name in order:
                times[name, size].append(milliseconds_per_call(served[name], batches[size]))
    reference = next(iter(served))
    results = {}
    for name in served:
        for size in BATCH_SIZES:
            runs = times[name, size]
            median = statistics.median(runs)
            entry = {"ms_per_call_median": round(median, 3), "ms_per_call_min": round(min(runs), 3),
                     "ms_per_call_max": round(max(runs), 3), "texts_per_second": round(size * 1000 / median, 1)}
            if name != reference:
                ratios = [a / b for a, b in zip(runs, times[reference, size])]
                entry[f"time_vs_{reference}"] = round(statistics.median(ratios), 4)
                entry["same_answers_as_reference"] = bool(np.allclose(
                    answers[name, size], answers[reference, size], atol=1e-5))
            results[f"{name}/batch_{size}"] = entry
    report = {
        "machine": machine_info(load_average_start=load_start, load_average_end=load_average()),
        "command": " ".join(["benchmarks/bench_serving.py", *(sys.argv[1:] if argv is None else argv)]),
        "exports": exports,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "results": results,
    }
    report["suite_imported"] = any(name == "suite" or name.startswith("suite.") for name in sys.modules)
    emit(report)
    return report


if __name__ == "__main__":
    main()
