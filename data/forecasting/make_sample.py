"""Writes `sample.csv`: a synthetic hourly series, 2000 rows, 3 channels, columns `date,load,temperature,traffic`.

Each channel is a trend plus daily (24 h) and weekly (168 h) seasonality plus Gaussian
noise, with its own level and scale. Deterministic (seed 0):
`python data/forecasting/make_sample.py`.
"""

import pathlib

import numpy as np
import pandas as pd

ROWS = 2000


def make_sample(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = np.arange(rows, dtype="float64")
    daily, weekly = 2 * np.pi * hours / 24, 2 * np.pi * hours / 168
    load = 50 + 0.01 * hours + 8 * np.sin(daily) + 3 * np.cos(weekly) + rng.normal(0, 1.0, rows)
    temperature = 15 - 0.002 * hours + 4 * np.sin(daily - 1.0) + 1.5 * np.sin(weekly) + rng.normal(0, 0.5, rows)
    traffic = 200 + 30 * np.sin(daily + 2.0) ** 2 + 20 * (np.sin(weekly) > 0) + rng.normal(0, 4.0, rows)
    return pd.DataFrame(
        {
            "date": pd.date_range("2024-01-01", periods=rows, freq="h"),
            "load": load.round(3),
            "temperature": temperature.round(3),
            "traffic": traffic.round(2),
        }
    )


if __name__ == "__main__":
    path = pathlib.Path(__file__).with_name("sample.csv")
    make_sample().to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    print(f"wrote {path}")
