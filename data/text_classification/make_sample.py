"""Writes the bundled sentiment sample: short English review sentences from a template grammar.

Run `python data/text_classification/make_sample.py` to regenerate `train.csv` (320 rows),
`valid.csv` (40) and `test.csv` (40), columns `text,label` with labels `positive`/`negative`.
Deterministic (fixed seed); every sentence is unique across the three files.
"""

import csv
import random
from pathlib import Path

SUBJECTS = ["the film", "this movie", "the acting", "the plot", "the soundtrack", "the director's vision",
            "the café scene", "the ending", "the dialogue", "the cast", "this sequel", "the naïve hero",
            "the cinematography", "the script", "the story"]
INTENSIFIERS = ["", "really ", "truly ", "utterly ", "quite ", "remarkably "]
WORDS = {
    "positive": {
        "adjectives": ["wonderful", "brilliant", "moving", "delightful", "charming", "gripping", "superb",
                       "heartfelt", "funny", "beautiful", "clever", "touching"],
        "verbs": ["loved", "enjoyed", "admired", "adored", "treasured"],
        "endings": ["i would watch it again", "a joy from start to finish", "worth every minute",
                    "highly recommended", "a real triumph"],
    },
    "negative": {
        "adjectives": ["boring", "dull", "clumsy", "tedious", "awful", "lifeless", "predictable", "silly",
                       "painful", "messy", "bland", "forgettable"],
        "verbs": ["hated", "disliked", "regretted", "endured", "resented"],
        "endings": ["i want my money back", "a waste of time", "avoid it", "a complete mess",
                    "not worth the ticket"],
    },
}
TEMPLATES = [
    "{subject} is {intensifier}{adjective} .",
    "{subject} was {intensifier}{adjective} , {ending} .",
    "i {verb} {subject} .",
    "i {verb} {subject} because it was {adjective} .",
    "{ending} : {subject} is {adjective} .",
    "what a {adjective} experience , {ending} !",
]


def sentence(rng: random.Random, label: str) -> str:
    words = WORDS[label]
    return rng.choice(TEMPLATES).format(
        subject=rng.choice(SUBJECTS), intensifier=rng.choice(INTENSIFIERS),
        adjective=rng.choice(words["adjectives"]), verb=rng.choice(words["verbs"]),
        ending=rng.choice(words["endings"]))


def main(sizes: dict[str, int] = {"train": 320, "valid": 40, "test": 40}, seed: int = 13) -> None:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < sum(sizes.values()):
        label = rng.choice(["positive", "negative"])
        text = sentence(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append((text[0].upper() + text[1:], label))
    start, folder = 0, Path(__file__).parent
    for split, size in sizes.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows[start:start + size])
        start += size


if __name__ == "__main__":
    main()
