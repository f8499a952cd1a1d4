"""transformer-suite: one Keras Transformer backbone serving five domains."""

from suite._version import __version__
from suite.backbone import BackboneConfig, Seq2SeqBackbone, TransformerBackbone

__all__ = ["__version__", "BackboneConfig", "Seq2SeqBackbone", "TransformerBackbone", "load"]


def load(path):
    """Loads a task saved with `Task.save`, whatever its domain."""
    from suite.tasks import Task

    return Task.load(path)
