"""What every domain trains with: `TrainingConfig`, the warm-up schedules and AdamW (and its lazy form)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

from suite.distribute import STRATEGIES

DECAYS = ("cosine", "linear")


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation settings shared by every domain.

    The learning rate rises linearly over `warmup_fraction` of the steps, then decays to zero along
    a cosine (`decay: cosine`) or a line (`decay: linear`, BERT's fine-tuning schedule).
    `max_steps` ends a run after that many optimizer steps, and the schedule spans them (Hugging Face's
    `max_steps`: a corpus too large to read whole in the budget); `max_seconds` stops a run after that
    much training time, the schedule still laid out for all `epochs`. Both are checked after every
    step; the stopped epoch is still validated, and a resumed run has the time again.
    `ema_momentum` (e.g. 0.999; null: off) keeps an exponential moving average of the weights,
    updated inside the compiled step: validation, the best epoch's weights and so the trained
    model use the average, while training continues on the raw weights.
    `steps_per_execution` runs that many steps in one call from Python (Keras' option of that name;
    the Model Garden's `steps_per_loop`): less per-step overhead where steps are short. Callbacks
    then see every `steps_per_execution`-th step: `max_steps` and `max_seconds` may be overrun by
    fewer than that many steps, and checkpoints fall on the first execution boundary at or after
    each multiple of `checkpoint_steps`.
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
    max_steps: int | None = None
    max_seconds: float | None = None
    ema_momentum: float | None = None
    steps_per_execution: int = 1

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_steps", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or null), got {self.max_steps}.")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 (or null), got {self.max_seconds}.")
        if self.ema_momentum is not None and not 0.0 < self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in (0, 1) (or null), got {self.ema_momentum}.")
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


@keras.saving.register_keras_serializable(package="suite")
class LazyAdamW(keras.optimizers.AdamW):
    """AdamW whose update of a variable with a sparse gradient (`tf.IndexedSlices`: the rows of an
    embedding table that a step gathered) touches only those rows' moments and values, as TF
    Addons' LazyAdam did; the other rows keep theirs. A step then costs O(rows gathered), not
    O(table rows), which matters for tables of 10^5 to 10^7 rows. Dense gradients get AdamW's update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("LazyAdamW does not support amsgrad.")

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        rows, summed, real = _summed_rows(gradient)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.cast(self.beta_2, dtype) ** step)
                 / (1 - tf.cast(self.beta_1, dtype) ** step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        m_rows, v_rows = keras.ops.take(m, rows, axis=0), keras.ops.take(v, rows, axis=0)
        summed = tf.cast(summed, dtype)
        new_m = m_rows + (summed - m_rows) * (1 - self.beta_1)
        new_v = v_rows + (tf.square(summed) - v_rows) * (1 - self.beta_2)
        real = tf.cast(real, dtype)[:, None]
        shape = tf.constant(list(variable.shape), rows.dtype)
        self.assign_add(m, tf.IndexedSlices((new_m - m_rows) * real, rows, shape))
        self.assign_add(v, tf.IndexedSlices((new_v - v_rows) * real, rows, shape))
        self.assign_sub(variable, tf.IndexedSlices(alpha * new_m / (tf.sqrt(new_v) + self.epsilon) * real, rows, shape))


def _summed_rows(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A sparse gradient `(k, ...)` with repeated rows as `(rows (k,), values (k, ...), real (k,))`:
    each row once with its values summed, then padding slots (`real` False, row 0, values 0).
    Static shapes (no `tf.unique`), so it compiles with XLA."""
    indices = tf.cast(gradient.indices, tf.int32)
    order = tf.argsort(indices)
    indices, values = tf.gather(indices, order), tf.gather(gradient.values, order)
    first = tf.concat([[True], indices[1:] != indices[:-1]], 0)
    segments = tf.cumsum(tf.cast(first, tf.int32)) - 1
    count = tf.shape(indices)[0]
    real = tf.range(count) <= segments[-1]
    rows = tf.where(real, tf.math.unsorted_segment_max(indices, segments, count), 0)
    return rows, tf.math.unsorted_segment_sum(values, segments, count), real


def adamw(training: TrainingConfig, learning_rate, no_decay: Sequence[str], lazy: bool = False,
          **options) -> keras.optimizers.AdamW:
    """AdamW (`LazyAdamW` when `lazy`) at `learning_rate` (a number or schedule) with
    `training.weight_decay`, except on variables whose names contain one of `no_decay` (norms,
    biases, embeddings); `training.ema_momentum` turns on Keras' weight averaging (`use_ema`);
    `options` go to `AdamW`. The name is fixed (not numbered per process), so a checkpoint's
    optimizer variables match when a run resumes in the process that was interrupted."""
    optimizer_class = LazyAdamW if lazy else keras.optimizers.AdamW
    options = {"name": "lazy_adam_w" if lazy else "adam_w", **options}
    if training.ema_momentum is not None:
        options = {"use_ema": True, "ema_momentum": training.ema_momentum, **options}
    optimizer = optimizer_class(learning_rate=learning_rate, weight_decay=training.weight_decay, **options)
    optimizer.exclude_from_weight_decay(var_names=list(no_decay))
    return optimizer
