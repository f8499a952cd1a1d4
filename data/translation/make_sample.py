"""Writes the bundled English->German sample (train.tsv, valid.tsv) from a small template grammar.

Sentences follow "subject [clothing] verb-phrase [place]." with German agreement worked out per
template, so every pair is a correct translation. Deterministic: `python make_sample.py`.
"""

from __future__ import annotations

import random
from pathlib import Path

# (English, German, plural?, human?)
SUBJECTS = [
    ("A man", "Ein Mann", False, True),
    ("A woman", "Eine Frau", False, True),
    ("A child", "Ein Kind", False, True),
    ("A girl", "Ein Mädchen", False, True),
    ("A boy", "Ein Junge", False, True),
    ("An old man", "Ein alter Mann", False, True),
    ("A young woman", "Eine junge Frau", False, True),
    ("A dog", "Ein Hund", False, False),
    ("Two men", "Zwei Männer", True, True),
    ("Two women", "Zwei Frauen", True, True),
    ("Three children", "Drei Kinder", True, True),
    ("Two dogs", "Zwei Hunde", True, False),
]
COLOURS = [("red", "rot"), ("blue", "blau"), ("green", "grün"), ("black", "schwarz"), ("white", "weiß"), ("yellow", "gelb")]
# (English singular, English plural, German singular, German plural) with {c} the colour.
CLOTHES = [
    ("in a {c} shirt", "in {c} shirts", "in einem {c}en Hemd", "in {c}en Hemden"),
    ("in a {c} jacket", "in {c} jackets", "in einer {c}en Jacke", "in {c}en Jacken"),
    ("with a {c} hat", "with {c} hats", "mit einem {c}en Hut", "mit {c}en Hüten"),
]
# (English -ing phrase, German singular, German plural, human only?)
VERBS = [
    ("running", "läuft", "laufen", False),
    ("sleeping", "schläft", "schlafen", False),
    ("swimming", "schwimmt", "schwimmen", False),
    ("jumping over a fence", "springt über einen Zaun", "springen über einen Zaun", False),
    ("playing with a ball", "spielt mit einem Ball", "spielen mit einem Ball", False),
    ("riding a bike", "fährt Fahrrad", "fahren Fahrrad", True),
    ("eating an apple", "isst einen Apfel", "essen einen Apfel", True),
    ("reading a book", "liest ein Buch", "lesen ein Buch", True),
    ("playing football", "spielt Fußball", "spielen Fußball", True),
    ("drinking coffee", "trinkt Kaffee", "trinken Kaffee", True),
    ("singing a song", "singt ein Lied", "singen ein Lied", True),
    ("climbing a tree", "klettert auf einen Baum", "klettern auf einen Baum", True),
    ("waiting for the bus", "wartet auf den Bus", "warten auf den Bus", True),
    ("smiling", "lächelt", "lächeln", True),
    ("cooking dinner", "kocht das Abendessen", "kochen das Abendessen", True),
]
PLACES = [
    ("", ""),
    ("in the park", "im Park"),
    ("on the street", "auf der Straße"),
    ("at the beach", "am Strand"),
    ("in the garden", "im Garten"),
    ("in front of a house", "vor einem Haus"),
    ("next to the river", "neben dem Fluss"),
    ("in the snow", "im Schnee"),
    ("on a bridge", "auf einer Brücke"),
]


def random_pair(rng: random.Random) -> tuple[str, str]:
    """One sentence pair (English, German)."""
    subject_en, subject_de, plural, human = rng.choice(SUBJECTS)
    words_en, words_de = [subject_en], [subject_de]
    if human and rng.random() < 0.4:
        colour_en, colour_de = rng.choice(COLOURS)
        singular_en, plural_en, singular_de, plural_de = rng.choice(CLOTHES)
        words_en.append((plural_en if plural else singular_en).format(c=colour_en))
        words_de.append((plural_de if plural else singular_de).format(c=colour_de))
    verb_en, singular_de, plural_de, human_only = rng.choice([v for v in VERBS if human or not v[3]])
    words_en.append(("are " if plural else "is ") + verb_en)
    words_de.append(plural_de if plural else singular_de)
    place_en, place_de = rng.choice(PLACES)
    words_en.append(place_en)
    words_de.append(place_de)
    return " ".join(w for w in words_en if w) + ".", " ".join(w for w in words_de if w) + "."


def make_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` distinct pairs."""
    rng = random.Random(seed)
    pairs: dict[str, str] = {}
    while len(pairs) < count:
        source, target = random_pair(rng)
        pairs.setdefault(source, target)
    return list(pairs.items())


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> None:
    lines = ["source\ttarget"] + [f"{source}\t{target}" for source, target in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(train_size: int = 600, valid_size: int = 80) -> None:
    pairs = make_pairs(train_size + valid_size)
    here = Path(__file__).resolve().parent
    write_tsv(here / "train.tsv", pairs[:train_size])
    write_tsv(here / "valid.tsv", pairs[train_size:])


if __name__ == "__main__":
    main()
