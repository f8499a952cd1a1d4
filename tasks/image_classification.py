"""Train an image classifier: `python tasks/image_classification.py [--config FILE] [--<key> VALUE ...]`.

Defaults to scikit-learn's digits with a seeded test split; `--data.train path/to/folder` trains on any
`folder/<class>/<image>.png|.jpg` tree. Same flags as `suite train image_classification`; see `--help`.
"""

import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "image_classification", *sys.argv[1:]]))
