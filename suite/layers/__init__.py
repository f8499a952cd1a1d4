"""The suite's Transformer layers, written with `keras.ops` so they run on any Keras backend."""

from suite.layers.attention import MultiHeadAttention
from suite.layers.blocks import DropPath, TransformerDecoderBlock, TransformerEncoderBlock
from suite.layers.feed_forward import FeedForward
from suite.layers.pooling import AttentionPooling, SequencePooling
from suite.layers.position import (
    LearnedPositionEmbedding,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)

__all__ = [
    "AttentionPooling",
    "DropPath",
    "FeedForward",
    "LearnedPositionEmbedding",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "SequencePooling",
    "SinusoidalPositionEncoding",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
]
