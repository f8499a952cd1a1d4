"""ETTh1 forecasting: test MSE/MAE of the patch Transformer beside the baselines, per horizon.

For each horizon the forecaster is trained from `suite/forecasting/configs/forecasting.yaml` (lookback
336, all 7 channels, the standard 12/4/4-month split, keeping the best validation epoch) and
scored on every test window; the last-value, seasonal-naive (24 h) and DLinear (closed-form)
baselines are scored on the same windows. MSE/MAE are on the standardised scale, as papers
report. `train_seconds` is the wall time of `model.fit`; `train_cpu_seconds` the process CPU time
of the whole training call (all threads; on a shared machine the better measure of work). Prints one JSON object on stdout.

    python benchmarks/bench_forecasting.py                          # horizons 96 192 336 720
    python benchmarks/bench_forecasting.py --horizons 96 --set training.epochs=10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import Stopwatch, add_overrides_option, emit, load_average, machine_info, overrides  # noqa: E402

from suite.forecasting.task import Forecaster  # noqa: E402

TARGET_MSE_96 = 0.38
BASELINES = ("last_value", "seasonal_naive", "dlinear")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    parser.add_argument("--config", type=Path, default=Forecaster.config_file())
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "ett" / "ETTh1.csv")
    add_overrides_option(parser)
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    return parser.parse_args(argv)


def run_horizon(series, config_path: Path, horizon: int, extra: dict, verbose: int) -> dict:
    with Stopwatch() as clock:
        task = Forecaster.train(series, config_path, verbose=verbose, horizon=horizon, **extra)
    training = task.training_metrics
    test = task.evaluate(series, part="test")
    model = test["model"]
    return {
        "horizon": horizon,
        "train_seconds": training["train_seconds"],
        "train_cpu_seconds": round(clock.cpu, 1),
        "epochs_run": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "test_windows": test["windows"],
        "model": {"mse": model["mse"], "mae": model["mae"], "mase": model["mase"], "smape": model["smape"]},
        **{name: {"mse": test[name]["mse"], "mae": test[name]["mae"]} for name in BASELINES},
        "beats_every_baseline": all(
            model[m] < test[name][m] for name in BASELINES for m in ("mse", "mae")
        ),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is missing: the benchmark needs ETTh1 (../shared/datasets/ett/).")
    extra = overrides(args.overrides)
    series = Forecaster.read(args.data, Forecaster.resolve_config(args.config, extra))
    report = {
        "benchmark": "forecasting_etth1",
        "machine": machine_info(load_average_start=load_average()),
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "overrides": extra,
        "results": [],
    }
    for horizon in args.horizons:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Keras progress must not mix with the JSON on stdout
            result = run_horizon(series, args.config, horizon, extra, args.verbose)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        result["load_average_end"] = load_average()
        report["results"].append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    by_horizon = {r["horizon"]: r for r in report["results"]}
    report["targets"] = {
        "mse_96_at_most_0.38": by_horizon[96]["model"]["mse"] <= TARGET_MSE_96 if 96 in by_horizon else None,
        "train_96_within_20_min": by_horizon[96]["train_seconds"] <= 1200 if 96 in by_horizon else None,
        "beats_every_baseline_at_every_horizon": all(r["beats_every_baseline"] for r in report["results"]),
    }
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
