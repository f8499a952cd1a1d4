"""`tf.distribute` strategies by name, for `training.strategy`."""

from __future__ import annotations

import functools
import os

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` that `training.strategy` names.

    - `default`: the strategy in effect (TensorFlow's default strategy outside any
      `strategy.scope()`; a caller's own scope otherwise).
    - `mirrored`: `MirroredStrategy` over every local GPU, or every logical CPU device
      when there is no GPU.
    - `multi_worker`: `MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG`.
    - `tpu`: `TPUStrategy` over the TPU named by the TPU_NAME environment variable (a Cloud
      TPU name or `grpc://` address, `local` on a TPU VM), or found by `TPUClusterResolver`.

    Every name but `default` gives one shared strategy per process: a model, its optimizer
    and its training must all use the same strategy object, and a process may join only
    one collective cluster or initialise its TPU system once.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ValueError(f"training.strategy must be one of {list(STRATEGIES)}, got {name!r}.")
    _fix_keras_distribution()
    return _shared_strategy(name)


def xla_steps_allowed(strategy: tf.distribute.Strategy) -> bool:
    """Whether Keras may XLA-compile training and evaluation steps under `strategy`.

    Keras compiles the whole step, cross-replica part included, as one XLA program. That
    works with a single replica only: with several local devices the program would read
    variables held on other devices (tensorflow.org/xla/known_issues), XLA has no
    collectives on CPU for multi-worker all-reduce, and TPU steps are XLA-compiled by the
    TPU compiler anyway. Elsewhere the steps run as ordinary `tf.function`s.
    """
    multi_device = (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.TPUStrategy)
    return strategy.num_replicas_in_sync == 1 and not isinstance(strategy, multi_device)


@functools.cache
def _shared_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "training.strategy 'multi_worker' reads the cluster from the TF_CONFIG environment "
                "variable, which is not set; set it on every worker, e.g. "
                '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\'.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(
            f"training.strategy 'tpu': no TPU could be reached ({error}); set TPU_NAME to the TPU's name "
            "or grpc:// address, or to 'local' on a TPU VM."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def _fix_keras_distribution() -> None:
    """Works around two Keras 3 (3.15) behaviours of `fit` / `evaluate` under a strategy.

    - `_maybe_symbolic_build` opens an extra iterator over the data to read one batch for
      its shapes. With `shuffle(reshuffle_each_iteration=True)` that peek consumes the first
      shuffle order, so distributed training saw other batches than single-device training
      with the same seed; under MultiWorkerMirroredStrategy the peek's cross-worker MEAN of
      the nested batch fails outright (keras-team/keras#20585). The shapes are taken from
      the dataset's `element_spec` instead: no data is read.
    - `reduce_per_replica` averages scalar logs (loss, metrics) across workers with
      `axis=0`, which scalars do not have (tensorflow/tensorflow#72388); they are averaged
      over replicas with `axis=None`.
    """
    trainer_class = keras_tf_trainer.TensorFlowTrainer
    if getattr(trainer_class, "_suite_distribution_fix", False):
        return
    if not hasattr(trainer_class, "_maybe_symbolic_build") or not hasattr(keras_tf_trainer, "reduce_per_replica"):
        raise RuntimeError("this Keras version changed the trainer internals that suite.distribute works around.")
    symbolic_build, reduce_per_replica = trainer_class._maybe_symbolic_build, keras_tf_trainer.reduce_per_replica

    def symbolic_build_from_spec(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return symbolic_build(self, iterator, data_batch)
        spec = iterator.data_adapter.get_tf_dataset().element_spec
        batch = tf.nest.map_structure(lambda s: tf.TensorSpec((None, *s.shape[1:]), s.dtype), spec)
        with self._distribute_strategy.scope():
            self._symbolic_build(data_batch=batch)

    def reduce_logs(values, strategy, reduction):
        if reduction in ("auto", "mean") and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    trainer_class._maybe_symbolic_build = symbolic_build_from_spec
    keras_tf_trainer.reduce_per_replica = reduce_logs
    trainer_class._suite_distribution_fix = True
