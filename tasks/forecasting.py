"""Trains the forecaster from `suite/forecasting/configs/forecasting.yaml`; flags override its keys.

    python tasks/forecasting.py --horizon 192 --output-dir runs/forecasting
"""

import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "forecasting", *sys.argv[1:]]))
