"""Train a translator: `python tasks/translation.py [--config FILE] [--<key> VALUE ...]`.

Same flags as `suite train translation`; see `--help`. The default config trains Multi30k
en->de; `--data.train data/translation/train.tsv --data.validation data/translation/valid.tsv`
trains on the bundled sample.
"""

import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "translation", *sys.argv[1:]]))
