"""Train a text classifier: `python tasks/text_classification.py [--config FILE] [--<key> VALUE ...]`.

Same flags as `suite train text_classification`; see `--help`.
"""

import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "text_classification", *sys.argv[1:]]))
