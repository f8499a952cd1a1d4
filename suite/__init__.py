"""transformer-suite: one Keras Transformer backbone serving five domains."""

from suite.backbone import BackboneConfig, Seq2SeqBackbone, TransformerBackbone

__version__ = "0.1.0"

__all__ = ["BackboneConfig", "Seq2SeqBackbone", "TransformerBackbone", "load"]


def load(path):
    """Loads a task saved with `Task.save`, whatever its domain."""
    from suite.tasks import Task

    return Task.load(path)
