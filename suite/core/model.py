"""The base of every domain model (stem -> shared backbone -> head): its config, written once."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras


class DomainModel:
    """Mixed into a domain's Keras model (`class X(DomainModel, keras.Model)`) whose constructor takes
    `backbone` (a `BackboneConfig` or a dict of its fields, read with `as_backbone_config` and kept
    as `backbone_config`) and the plain values named in `config_arguments`, each kept as an
    attribute of that name.

    `get_config` returns them with the backbone, name, trainable flag and dtype policy, and
    `from_config` rebuilds the model from them, so a subclass writes neither. A mixin rather than a
    `keras.Model` subclass: Keras rewrites the bases of functional subclasses, which a shared
    base class of functional and subclassed models would not survive.
    """

    config_arguments: ClassVar[tuple[str, ...]] = ()

    def get_config(self) -> dict:
        def plain(value):
            return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

        return {
            **{name: plain(getattr(self, name)) for name in self.config_arguments},
            "backbone": dataclasses.asdict(self.backbone_config),
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
