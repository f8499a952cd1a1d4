"""Helpers shared by the benchmark scripts: the machine description, process CPU time, a stopwatch,
`--set KEY=VALUE` config overrides and printing the result.

The scripts run as `python benchmarks/bench_x.py`, which puts this folder on `sys.path`; they
import it after setting `KERAS_BACKEND`: `from common import Stopwatch, machine_info, ...`.
`suite bench` (suite/bench.py) keeps its own, lighter figures: it is installed without this folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import keras
import tensorflow as tf
import yaml


def cpuinfo_field(name: str) -> str | None:
    """The first `name` field of /proc/cpuinfo; None where there is no such file or field."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's `model name` in /proc/cpuinfo, else what `platform` knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_vector_extensions() -> list[str]:
    """Which of `VECTOR_FLAGS` the CPU has (/proc/cpuinfo; empty elsewhere). One `cpu_model` can name
    machines with and without AVX-512, whose training speeds differ widely."""
    flags = set((cpuinfo_field("flags") or "").split())
    return [flag for flag in VECTOR_FLAGS if flag in flags]


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def code_version() -> str | None:
    """`git describe --always --dirty` of the checkout the benchmark runs from; None outside git."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                                   cwd=Path(__file__).parent, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return described.stdout.strip()


def machine_info(**extra) -> dict:
    """CPU model, vector extensions and cores, platform, Python, TensorFlow and Keras versions, the UTC
    date and the code's commit, followed by `extra` (what else a script reports, e.g.
    `keras_hub=keras_hub.__version__`)."""
    return {
        "cpu_model": cpu_model(),
        "cpu_vector_extensions": cpu_vector_extensions(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": code_version(),
        **extra,
    }


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stopwatch:
    """Wall-clock and process CPU seconds of a `with` block: `.wall`, `.cpu`, rounded to 0.01 s."""

    def __enter__(self) -> "Stopwatch":
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = round(time.perf_counter() - self.wall, 2)
        self.cpu = round(cpu_seconds() - self.cpu, 2)

    def as_dict(self) -> dict:
        return {"train_seconds": self.wall, "train_cpu_seconds": self.cpu}


def mean_and_std(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation of `values`, rounded to 4 places; no deviation for one value."""
    values = list(values)
    return round(statistics.mean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else None


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`; read them with `overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, value parsed as YAML (repeatable)")


def overrides(pairs: list[str]) -> dict:
    """`["a.b=1", "loss=mae"]` -> `{"a.b": 1, "loss": "mae"}` (values parsed as YAML)."""
    result = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        result[key] = yaml.safe_load(value)
    return result


def emit(result: dict, output: Path | None = None) -> None:
    """Prints `result` as indented JSON on stdout (NumPy scalars as floats), and writes it to
    `output` too when given."""
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
