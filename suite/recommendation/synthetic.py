"""Generated interactions for load-testing the recommender at any catalogue size."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_interactions(num_users: int, num_items: int, mean_length: int = 20, exponent: float = 1.0,
                           follow: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """An interactions table (`user_id`, `item_id`, `timestamp`) with power-law popularity and
    sequential structure.

    Each user has `5 + Geometric` events (mean `mean_length`, at most 200). Each item has one fixed
    successor; an event is its user's previous item's successor with probability `follow`, else a
    draw by popularity (Zipf with `exponent` over a random order of the items). `num_items` events
    before each user's last two go through the catalogue in random order instead (never replaced
    by a successor), so every item is in the leave-one-out training part, and the vocabulary is
    the whole catalogue, when there are that many events.
    """
    if num_users < 1 or num_items < 2 or mean_length <= 5 or not 0.0 <= follow < 1.0:
        raise ValueError(f"need num_users >= 1, num_items >= 2, mean_length > 5 and follow in [0, 1); got "
                         f"{num_users}, {num_items}, {mean_length}, {follow}.")
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1.0 / (mean_length - 4), num_users) - 1, 200)
    events = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    weights = 1.0 / np.arange(1, num_items + 1) ** exponent
    by_popularity = rng.permutation(num_items)[rng.choice(num_items, events, p=weights / weights.sum())]
    before_last_two = np.flatnonzero(np.arange(events) - np.repeat(starts, lengths) < np.repeat(lengths - 2, lengths))
    covering = np.zeros(events, bool)
    covering[rng.choice(before_last_two, min(num_items, len(before_last_two)), replace=False)] = True
    by_popularity[covering] = rng.permutation(num_items)[:covering.sum()]
    successor = rng.permutation(num_items)
    follows = (rng.random(events) < follow) & ~covering
    items = by_popularity.copy()
    for step in range(1, int(lengths.max())):
        positions = starts[lengths > step] + step
        chained = positions[follows[positions]]
        items[chained] = successor[items[chained - 1]]
    users = np.repeat(np.arange(num_users), lengths)
    return pd.DataFrame({"user_id": pd.Series(users).map("u{}".format), "item_id": pd.Series(items).map("i{}".format),
                         "timestamp": np.arange(events) - np.repeat(starts, lengths)})
