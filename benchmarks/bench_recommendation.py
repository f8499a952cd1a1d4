"""MovieLens-100K next-item recommendation: the SASRec-style recommender beside the baselines.

Trains from `suite/recommendation/configs/recommendation.yaml` on the leave-one-out training part (each
user's events but the last two), then ranks each user's last item given all events before it:
HR@10, NDCG@10 and MRR under full ranking over all items (seen items excluded) and under the
100-sampled-negatives protocol (uniform negatives the user never rated, seeded), beside the
most-popular and item co-occurrence baselines on the same users and negatives. Training time
excludes reading and evaluation. Prints one JSON object on stdout.

    python benchmarks/bench_recommendation.py
    python benchmarks/bench_recommendation.py --set training.epochs=20 --set loss=gbce
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import Stopwatch, add_overrides_option, emit, machine_info, overrides  # noqa: E402
from suite.config import to_dict  # noqa: E402
from suite.recommendation.task import Recommender  # noqa: E402

TARGETS = {"sampled_HR@10": 0.70, "sampled_NDCG@10": 0.45, "full_HR@10_over_most_popular": 1.5, "train_seconds": 600}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Recommender.config_file())
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "ml-100k" / "u.data")
    add_overrides_option(parser)
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    return parser.parse_args(argv)


def uptime() -> str:
    """`uptime`'s line: time, users and load averages."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summary(results: dict) -> dict:
    """The figures of the results table: method -> protocol -> metrics."""
    return {name: results[name] for name in ("model", "most_popular", "cooccurrence")}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"MovieLens-100K not found at {args.data}")
    machine = machine_info(uptime_start=uptime())
    config = Recommender.resolve_config(args.config, {"data.train": str(args.data), **overrides(args.overrides)})
    interactions = Recommender.read(config.data.train, config)
    with contextlib.redirect_stdout(sys.stderr), Stopwatch() as training_watch:
        task = Recommender.train(interactions, config, verbose=args.verbose)
    training = task.training_metrics
    with Stopwatch() as evaluation:
        test = task.evaluate(interactions)
    model, popular = test["model"], test["most_popular"]
    ratio = model["full"]["HR@10"] / max(popular["full"]["HR@10"], 1e-9)
    result = {
        "benchmark": "ml-100k leave-one-out next-item ranking",
        "machine": {**machine, "uptime_end": uptime()},
        "config": to_dict(config),
        "data": {"events": len(interactions), "users": test["users"], "items": task.preprocessor.vocabulary_size - 2},
        "train_seconds": training["train_seconds"],
        "train_cpu_seconds_including_validation": training_watch.cpu,
        "final_loss": training["history"]["loss"][-1],
        "evaluation_seconds": evaluation.wall,
        "test": summary(test),
        "validation": summary(training["validation"]),
        "full_HR@10_over_most_popular": round(ratio, 3),
        "targets": TARGETS,
        "targets_met": {
            "sampled_HR@10": model["sampled"]["HR@10"] >= TARGETS["sampled_HR@10"],
            "sampled_NDCG@10": model["sampled"]["NDCG@10"] >= TARGETS["sampled_NDCG@10"],
            "full_HR@10_over_most_popular": ratio >= TARGETS["full_HR@10_over_most_popular"],
            "train_seconds": training["train_seconds"] <= TARGETS["train_seconds"],
        },
    }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
