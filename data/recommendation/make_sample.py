"""Writes the bundled sample `interactions.csv`: synthetic interactions with structure.

300 items in 30 genres of 10 (items `i001`-`i300`; genre g holds items 10g+1 .. 10g+10).
Each of 200 users (`u001`-`u200`) has two favourite genres and 12-30 events. After an item
the next one is, with probability 0.75, the following item of the same genre's cycle
(10g+10 is followed by 10g+1); with 0.15 a random item of a favourite genre; otherwise a
random item drawn by a Zipf-like popularity. Nobody repeats an item: a consumed item is
replaced by the next unconsumed one of its cycle (or, when its genre is used up, by one
drawn by popularity). Timestamps (unix seconds from 2024-01-01) grow by about a day per
event, and 5% of consecutive events share a timestamp. Ratings are 3-5 in favourite genres
and 1-3 elsewhere. Rows are in timestamp order (a stable sort, so a user's events with equal
timestamps keep their order). The output is deterministic (seed 7).

Run: python data/recommendation/make_sample.py
"""

import csv
import pathlib

import numpy as np

NUM_USERS, NUM_GENRES, GENRE_SIZE = 200, 30, 10
START = 1_704_067_200


def next_in_cycle(item: int) -> int:
    genre, position = divmod(item, GENRE_SIZE)
    return genre * GENRE_SIZE + (position + 1) % GENRE_SIZE


def unconsumed(rng: np.random.Generator, item: int, consumed: set[int], popularity: np.ndarray) -> int:
    """`item`, or when consumed the next unconsumed one of its genre's cycle, or else one by popularity."""
    for _ in range(GENRE_SIZE):
        if item not in consumed:
            return item
        item = next_in_cycle(item)
    weights = popularity.copy()
    weights[list(consumed)] = 0.0
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def user_events(rng: np.random.Generator, popularity: np.ndarray) -> list[tuple[int, int, int]]:
    """(item, timestamp, rating) tuples of one user, oldest first; items are 0-based."""
    favourites = rng.choice(NUM_GENRES, 2, replace=False)
    item = int(favourites[0] * GENRE_SIZE + rng.integers(GENRE_SIZE))
    timestamp = START + int(rng.integers(0, 120 * 86_400))
    events, consumed = [], set()
    for _ in range(int(rng.integers(12, 31))):
        item = unconsumed(rng, item, consumed, popularity)
        consumed.add(item)
        liked = item // GENRE_SIZE in favourites
        events.append((item, timestamp, int(rng.integers(3, 6) if liked else rng.integers(1, 4))))
        draw = rng.random()
        if draw < 0.75:
            item = next_in_cycle(item)
        elif draw < 0.90:
            item = int(rng.choice(favourites) * GENRE_SIZE + rng.integers(GENRE_SIZE))
        else:
            item = int(rng.choice(len(popularity), p=popularity))
        if rng.random() >= 0.05:
            timestamp += int(rng.exponential(86_400)) + 1
    return events


def main() -> None:
    rng = np.random.default_rng(7)
    num_items = NUM_GENRES * GENRE_SIZE
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = rng.permutation(weights / weights.sum())
    rows = [
        (f"u{user + 1:03d}", f"i{item + 1:03d}", timestamp, rating)
        for user in range(NUM_USERS)
        for item, timestamp, rating in user_events(rng, popularity)
    ]
    rows.sort(key=lambda row: row[2])
    path = pathlib.Path(__file__).with_name("interactions.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "timestamp", "rating"])
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
