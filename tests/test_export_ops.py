"""Every op in each domain's SavedModel runs on stock TF Serving 2.20: core TF ops, no XLA-only
`Xla*` op and no XLA-compiled function (both need XLA on the server, tensorflow/serving#2214),
and only the TF Text ops that TF Serving 2.20 links in (TF Text 2.20's `ops_lib`)."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops checked below)
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from suite.vision.data import ImageData
from suite.tasks import Forecaster, ImageClassifier, Recommender, TextClassifier, Translator

# The ops TF Text 2.20 registers (its `ops_lib`, which TF Serving 2.20's model server links in).
TF_TEXT_2_20_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
    "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap", "PhraseTokenize",
    "RegexSplitWithOffsets", "SentenceFragments", "SentenceFragmentsV2", "SentencepieceDetokenizeOp",
    "SentencepieceIdToStringOp", "SentencepieceOp", "SentencepieceStringToIdOp", "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets",
    "TFText>BoiseTagsToOffsets", "TFText>ByteSplitByOffsets", "TFText>ByteSplitWithOffsets",
    "TFText>FastSentencepieceDetokenize", "TFText>FastSentencepieceTokenize", "TFText>FastWordpieceDetokenize",
    "TFText>NgramsStringJoin", "TFText>OffsetsToBoiseTags", "TFText>PhraseDetokenize",
    "TFText>RoundRobinGenerateMasks", "TFText>RoundRobinTrim", "TFText>Utf8Binarize",
    "TFText>WhitespaceTokenizeWithOffsetsV2", "TokenizerFromLogits", "UnicodeScriptTokenizeWithOffsets",
    "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets",
})
BACKBONE = {"num_layers": 1, "d_model": 16, "num_heads": 2, "ff_dim": 32, "dropout": 0.0}


def tiny_images() -> ImageData:
    images = np.random.default_rng(0).uniform(0, 255, (12, 8, 8, 1)).astype(np.float32)
    return ImageData(images, np.arange(12, dtype=np.int32) % 3, ["a", "b", "c"])


# Untrained tasks (fitted preprocessing, fresh weights): the graph does not depend on training.
DOMAINS = {
    "translation": (Translator, lambda: "data/translation/train.tsv", {
        "vocabulary_size": 200, "max_source_length": 16, "max_target_length": 16, "num_buckets": 1,
        "backbone": {**BACKBONE, "max_length": 16}, "decoding": {"beam_width": 3}}),
    "text_classification": (TextClassifier, lambda: "data/text_classification/train.csv", {
        "vocabulary_size": 200, "bucket_lengths": [8, 16], "backbone": {**BACKBONE, "max_length": 16}}),
    "forecasting": (Forecaster, lambda: "data/forecasting/sample.csv", {
        "lookback": 48, "horizon": 12, "patch_length": 8, "patch_stride": 8,
        "backbone": {**BACKBONE, "max_length": 16}}),
    "recommendation": (Recommender, lambda: "data/recommendation/interactions.csv", {
        "max_length": 8, "window_stride": 8,
        "backbone": {**BACKBONE, "max_length": 8, "causal": True, "position": "learned"}}),
    "image_classification": (ImageClassifier, tiny_images, {
        "patch_size": 2, "backbone": {**BACKBONE, "position": "none"}}),
}


def exported_ops(path: Path) -> tuple[set[str], list[str]]:
    """`(op types, names of functions marked for XLA compilation)` over the SavedModel's
    `saved_model.pb`: every graph node and every node of every library function."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    op_types, xla_functions = set(), []
    for meta_graph in saved_model.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
            if "_XlaMustCompile" in function.attr and function.attr["_XlaMustCompile"].b:
                xla_functions.append(function.signature.name)
    return op_types, xla_functions


def test_the_allow_list_names_registered_tf_text_ops():
    assert [name for name in sorted(TF_TEXT_2_20_OPS) if op_def_registry.get(name) is None] == []
    assert not any(hasattr(tf.raw_ops, name) for name in TF_TEXT_2_20_OPS)


@pytest.mark.parametrize("domain", DOMAINS)
def test_export_uses_only_ops_stock_tf_serving_runs(domain, repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    task_class, data, config = DOMAINS[domain]
    config = task_class.resolve_config(config)
    task = task_class.create(task_class.read(data(), config), config)
    op_types, xla_functions = exported_ops(task.export(tmp_path))
    assert sorted(op for op in op_types if op.startswith("Xla")) == []
    assert xla_functions == []
    not_core = {op for op in op_types if not hasattr(tf.raw_ops, op)}  # raw_ops: TF's own ops only
    assert sorted(not_core - TF_TEXT_2_20_OPS) == []
    assert bool(not_core) == (domain in ("translation", "text_classification"))  # tokenizers are in the graph
