"""The shared Transformer stacks: an encoder and an encoder-decoder, both domain-agnostic."""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from suite.config import from_dict
from suite.layers import (
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from suite.layers.feed_forward import ACTIVATIONS

POSITIONS = ("sinusoidal", "learned", "rotary", "none")


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Sizes and options of a Transformer stack.

    `position`: how positions enter the model: `sinusoidal` or `learned` vectors added to
    the input embeddings, `rotary` rotations inside every self-attention, or `none` (the stem
    adds its own, as the ViT stem does). `max_length` bounds learned positions and decode caches.
    `causal` makes the encoder's self-attention causal (decoders always are).
    `layer_norm_epsilon` is every LayerNorm's epsilon; `embedding_norm` adds a LayerNorm over
    the input embeddings (after positions, before dropout), as BERT and its family have.
    `inner_dropout`: dropout between the feed-forward's two layers (None: `dropout`; BERT has none).
    `drop_path`: stochastic depth, in training only: each residual branch (attention, feed-forward)
    of an example is dropped whole with a rate rising linearly over the blocks of a stack, from 0 at
    the first to `drop_path` at the last (as DeiT and CCT; a one-block stack has none). It adds no
    weights: 0 (the default) builds exactly the stack without it.
    """

    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    causal: bool = False
    position: str = "sinusoidal"
    max_length: int = 512
    layer_norm_epsilon: float = 1e-6
    embedding_norm: bool = False
    inner_dropout: float | None = None
    drop_path: float = 0.0

    def __post_init__(self):
        for name in ("num_layers", "d_model", "num_heads", "ff_dim", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BackboneConfig.{name} must be a positive int, got {value!r}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"BackboneConfig.d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})."
            )
        for name in ("dropout", "inner_dropout", "drop_path"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"BackboneConfig.{name} must be in [0, 1), got {value!r}.")
        if not 0.0 < self.layer_norm_epsilon < 1.0:
            raise ValueError(f"BackboneConfig.layer_norm_epsilon must be in (0, 1), got {self.layer_norm_epsilon!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"BackboneConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if self.position not in POSITIONS:
            raise ValueError(f"BackboneConfig.position must be one of {POSITIONS}, got {self.position!r}.")


def as_backbone_config(config: BackboneConfig | dict) -> BackboneConfig:
    """`config` itself, or the `BackboneConfig` of a dict of its fields (keys and types checked,
    errors naming the key, as every config is: `suite.config.from_dict`)."""
    return config if isinstance(config, BackboneConfig) else from_dict(BackboneConfig, config)


class _Stack(keras.Model):
    """Common parts of both backbones: config handling, positions, embedding norm and dropout."""

    def _make_position(self, config: BackboneConfig, dtype, name):
        if config.position == "sinusoidal":
            return SinusoidalPositionEncoding(dtype=dtype, name=name)
        if config.position == "learned":
            return LearnedPositionEmbedding(config.max_length, dtype=dtype, name=name)
        return None

    @staticmethod
    def _norm(config: BackboneConfig, dtype, name):
        return keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, dtype=dtype, name=name)

    def _make_embedding_norm(self, config: BackboneConfig, dtype, name):
        return self._norm(config, dtype, name) if config.embedding_norm else None

    def _make_final_norm(self, config: BackboneConfig, dtype, name):
        """A pre-LN stack ends with a LayerNorm; a post-LN stack already ends normalised."""
        return self._norm(config, dtype, name) if config.norm_first else None

    @staticmethod
    def _block_kwargs(config: BackboneConfig, dtype, index: int) -> dict:
        """Block `index`'s arguments; its drop-path rate is `index / (num_layers - 1)` of `drop_path`."""
        return dict(
            num_heads=config.num_heads,
            ff_dim=config.ff_dim,
            dropout=config.dropout,
            inner_dropout=config.inner_dropout,
            activation=config.activation,
            norm_first=config.norm_first,
            use_rotary=config.position == "rotary",
            layer_norm_epsilon=config.layer_norm_epsilon,
            drop_path=config.drop_path * (index / max(config.num_layers - 1, 1)),
            dtype=dtype,
        )

    @staticmethod
    def _embed(embeddings, position, norm, dropout, start_index=0, training=None):
        if position is not None:
            embeddings = embeddings + position(embeddings, start_index=start_index)
        if norm is not None:
            embeddings = norm(embeddings)
        return dropout(embeddings, training=training)

    def get_config(self):
        return {
            "config": dataclasses.asdict(self.config),
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="suite")
class TransformerBackbone(_Stack):
    """A stack of `TransformerEncoderBlock`s over any embeddings, then a final LayerNorm
    (pre-LN stacks only: a post-LN stack already ends normalised).

    Inputs: `{"embeddings": (batch, seq_len, d_model), "padding_mask": (batch, seq_len) bool}`.
    Output: `(batch, seq_len, d_model)`.
    """

    def __init__(self, config: BackboneConfig | dict, dtype=None, **kwargs):
        config = as_backbone_config(config)
        position = self._make_position(config, dtype, "position")
        embedding_norm = self._make_embedding_norm(config, dtype, "embedding_norm")
        embedding_dropout = keras.layers.Dropout(config.dropout, dtype=dtype, name="embedding_dropout")
        blocks = [
            TransformerEncoderBlock(**self._block_kwargs(config, dtype, i), name=f"encoder_block_{i}")
            for i in range(config.num_layers)
        ]
        final_norm = self._make_final_norm(config, dtype, "final_norm")

        embeddings = keras.Input((None, config.d_model), name="embeddings")
        padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
        x = self._embed(embeddings, position, embedding_norm, embedding_dropout)
        for block in blocks:
            x = block(x, padding_mask=padding_mask, use_causal_mask=config.causal)
        if final_norm is not None:
            x = final_norm(x)
        super().__init__(
            inputs={"embeddings": embeddings, "padding_mask": padding_mask},
            outputs=x,
            dtype=dtype,
            **kwargs,
        )
        self.config = config
        self.position = position
        self.blocks = blocks


@keras.saving.register_keras_serializable(package="suite")
class Seq2SeqBackbone(_Stack):
    """An encoder stack and a decoder stack (causal self-attention + cross-attention).

    Inputs: `encoder_embeddings (batch, S, d_model)`, `encoder_padding_mask (batch, S)`,
    `decoder_embeddings (batch, T, d_model)`, `decoder_padding_mask (batch, T)`.
    Output: decoder states `(batch, T, d_model)`.

    For generation, `encode` once, `init_cache` once, then `decode_step` per token.
    """

    def __init__(self, config: BackboneConfig | dict, dtype=None, **kwargs):
        config = as_backbone_config(config)
        self.config = config
        self.encoder_position = self._make_position(config, dtype, "encoder_position")
        self.decoder_position = self._make_position(config, dtype, "decoder_position")
        self.encoder_embedding_norm = self._make_embedding_norm(config, dtype, "encoder_embedding_norm")
        self.decoder_embedding_norm = self._make_embedding_norm(config, dtype, "decoder_embedding_norm")
        self.embedding_dropout = keras.layers.Dropout(config.dropout, dtype=dtype, name="embedding_dropout")
        self.encoder_blocks = [
            TransformerEncoderBlock(**self._block_kwargs(config, dtype, i), name=f"encoder_block_{i}")
            for i in range(config.num_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(**self._block_kwargs(config, dtype, i), name=f"decoder_block_{i}")
            for i in range(config.num_layers)
        ]
        self.encoder_norm = self._make_final_norm(config, dtype, "encoder_norm")
        self.decoder_norm = self._make_final_norm(config, dtype, "decoder_norm")

        inputs = {
            "encoder_embeddings": keras.Input((None, config.d_model), name="encoder_embeddings"),
            "encoder_padding_mask": keras.Input((None,), dtype="bool", name="encoder_padding_mask"),
            "decoder_embeddings": keras.Input((None, config.d_model), name="decoder_embeddings"),
            "decoder_padding_mask": keras.Input((None,), dtype="bool", name="decoder_padding_mask"),
        }
        encoded = self.encode(inputs["encoder_embeddings"], inputs["encoder_padding_mask"])
        decoded = self.decode(
            inputs["decoder_embeddings"],
            encoded,
            inputs["encoder_padding_mask"],
            inputs["decoder_padding_mask"],
        )
        super().__init__(inputs=inputs, outputs=decoded, dtype=dtype, **kwargs)

    def encode(self, embeddings, padding_mask, training=None):
        """Encoder states `(batch, S, d_model)` for source embeddings `(batch, S, d_model)`."""
        x = self._embed(
            embeddings, self.encoder_position, self.encoder_embedding_norm, self.embedding_dropout, training=training
        )
        for block in self.encoder_blocks:
            x = block(x, padding_mask=padding_mask, use_causal_mask=self.config.causal, training=training)
        return x if self.encoder_norm is None else self.encoder_norm(x)

    def decode(self, embeddings, encoder_outputs, encoder_padding_mask, padding_mask=None, training=None):
        """Decoder states `(batch, T, d_model)` for all target positions at once (teacher forcing)."""
        x = self._embed(
            embeddings, self.decoder_position, self.decoder_embedding_norm, self.embedding_dropout, training=training
        )
        for block in self.decoder_blocks:
            x = block(
                x,
                encoder_outputs,
                padding_mask=padding_mask,
                context_mask=encoder_padding_mask,
                training=training,
            )
        return x if self.decoder_norm is None else self.decoder_norm(x)

    def init_cache(self, encoder_outputs, max_length: int) -> dict:
        """Decode caches for `encoder_outputs (batch, S, d_model)`.

        Returns `{"self": (batch, layers, 2, max_length, heads, head_dim)` zeros,
        `"cross": (batch, layers, 2, S, heads, head_dim)` projected encoder states}`.
        """
        config = self.config
        batch = ops.shape(encoder_outputs)[0]
        head_dim = config.d_model // config.num_heads
        self_cache = ops.zeros(
            (batch, config.num_layers, 2, max_length, config.num_heads, head_dim),
            dtype=self.compute_dtype,
        )
        cross_cache = ops.stack(
            [block.cross_attention.context_cache(encoder_outputs) for block in self.decoder_blocks],
            axis=1,
        )
        return {"self": self_cache, "cross": cross_cache}

    def decode_step(self, embeddings, cache: dict, cache_index, encoder_padding_mask):
        """Decodes `embeddings (batch, t, d_model)` at positions `cache_index ..` with the cache.

        Returns `(states (batch, t, d_model), updated cache)`; equals the matching rows of
        `decode` over the whole prefix.
        """
        x = self._embed(
            embeddings,
            self.decoder_position,
            self.decoder_embedding_norm,
            self.embedding_dropout,
            start_index=cache_index,
        )
        new_self_cache = []
        for i, block in enumerate(self.decoder_blocks):
            x, layer_cache = block(
                x,
                None,
                context_mask=encoder_padding_mask,
                self_cache=cache["self"][:, i],
                cross_cache=cache["cross"][:, i],
                cache_index=cache_index,
            )
            new_self_cache.append(layer_cache)
        x = x if self.decoder_norm is None else self.decoder_norm(x)
        return x, {"self": ops.stack(new_self_cache, axis=1), "cross": cache["cross"]}
