"""What every domain trains with: `TrainingConfig`, the warm-up schedules and AdamW."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras

from suite.distribute import STRATEGIES

DECAYS = ("cosine", "linear")


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation settings shared by every domain.

    The learning rate rises linearly over `warmup_fraction` of the steps, then decays to zero along
    a cosine (`decay: cosine`) or a line (`decay: linear`, BERT's fine-tuning schedule).
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    early_stopping_patience: int = 0
    seed: int = 0
    checkpoint_steps: int = 200
    strategy: str = "default"
    decay: str = "cosine"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {list(DECAYS)}, got {self.decay!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}.")


def warmup_schedule(training: TrainingConfig, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up over `warmup_fraction` of the steps, then `training.decay` to zero."""
    warmup = int(training.warmup_fraction * total_steps)
    if training.decay == "linear":
        return WarmupLinearDecay(training.learning_rate, warmup, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=training.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="suite")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """From 0 up to `peak` over `warmup_steps`, then linearly down to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        fraction = keras.ops.minimum(step / self.warmup_steps, decay) if self.warmup_steps else decay
        return self.peak * keras.ops.clip(fraction, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def adamw(training: TrainingConfig, learning_rate, no_decay: Sequence[str], **options) -> keras.optimizers.AdamW:
    """AdamW at `learning_rate` (a number or schedule) with `training.weight_decay`, except on variables
    whose names contain one of `no_decay` (norms, biases, embeddings); `options` go to `AdamW`."""
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=training.weight_decay, **options)
    optimizer.exclude_from_weight_decay(var_names=list(no_decay))
    return optimizer
