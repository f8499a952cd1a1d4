"""Train a sequential recommender: `python tasks/recommendation.py [--config FILE] [--<key> VALUE ...]`.

Same flags as `suite train recommendation`; see `--help`.
"""

import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "recommendation", *sys.argv[1:]]))
