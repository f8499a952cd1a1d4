"""Throughput of `suite.layers.TransformerEncoderBlock` against two peer encoder blocks.

Peers, all pre-LN with the same sizes, activation, LayerNorm epsilon and dropout rate:
  - `keras_hub`: `keras_hub.layers.TransformerEncoder(normalize_first=True)`;
  - `keras_mha`: a block written here from `keras.layers.MultiHeadAttention` and Dense layers,
    with the same dropout sites as ours. `keras_hub` has no dropout between its two
    feed-forward Dense layers (ours has one, as issue 2 specifies); `--dropout 0` compares
    identical work.

Every block is XLA-compiled: the train step through `model.compile(jit_compile=True)` and
`train_on_batch` (Adam, MSE), inference through `tf.function(jit_compile=True)`. Warm-up calls
(compilation) are excluded; the blocks are timed interleaved, `--repetitions` times, and the
medians reported. Achieved GFLOP/s use an analytic FLOP count of the block and are set against
plain XLA matmuls timed in the same run. Prints one JSON object on stdout:
  - `blocks.<name>.<train|inference>`: wall seconds per step (median, min, max), process CPU
    seconds (median; steadier than wall time on a shared machine), tokens/s and GFLOP/s from
    the wall median, GFLOP per CPU-second, and both as fractions of the best matmul's;
  - `suite_speedup.<mode>_<wall|cpu>.<peer>`: median over repetitions of peer time / suite
    time within the same round (> 1: ours is faster);
  - `max_abs_diff_vs_suite`: peers' inference outputs, given our weights, at unpadded positions.

    python benchmarks/bench_backbone.py            # full run (sizes of issue 2)
    python benchmarks/bench_backbone.py --quick    # smoke run with tiny sizes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import emit, load_average, machine_info  # noqa: E402
from suite.layers import TransformerEncoderBlock  # noqa: E402

LAYER_NORM_EPSILON = 1e-6
QUICK = dict(
    batch=2, seq_len=16, d_model=32, num_heads=2, ff_dim=64, repetitions=2, steps=1, warmup=1, matmul_size=128
)


class KerasMHAEncoderBlock(keras.layers.Layer):
    """Pre-LN encoder block from stock Keras layers: `(batch, seq_len, d_model)` -> same shape.

    `x + drop(MHA(norm(x)))`, then `x + drop(Dense(drop(act(Dense(norm(x))))))`: the same
    wiring and dropout sites as `suite.layers.TransformerEncoderBlock`.
    """

    def __init__(self, num_heads: int, ff_dim: int, dropout: float, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.activation = activation

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        self.attention_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, d_model // self.num_heads, dropout=self.dropout
        )
        self.attention.build(inputs_shape, inputs_shape)
        self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)
        self.hidden = keras.layers.Dense(self.ff_dim, activation=self.activation)
        self.output_dense = keras.layers.Dense(d_model)
        self.hidden.build(inputs_shape)
        self.output_dense.build((*inputs_shape[:-1], self.ff_dim))
        for norm in (self.attention_norm, self.feed_forward_norm):
            norm.build(inputs_shape)
        self.drop = keras.layers.Dropout(self.dropout)

    def call(self, inputs, padding_mask, training=None):
        mask = padding_mask[:, :, None] & padding_mask[:, None, :]
        h = self.attention_norm(inputs)
        x = inputs + self.drop(self.attention(h, h, attention_mask=mask, training=training), training=training)
        h = self.drop(self.hidden(self.feed_forward_norm(x)), training=training)
        return x + self.drop(self.output_dense(h), training=training)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--ff-dim", type=int, default=1024)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--activation", choices=("gelu", "relu"), default="gelu")
    parser.add_argument("--repetitions", type=int, default=20, help="timed rounds over all blocks")
    parser.add_argument("--steps", type=int, default=3, help="calls per block per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per block first")
    parser.add_argument("--matmul-size", type=int, default=2048, help="N of the square N x N reference matmul")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one round or two")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    for name in ("batch", "seq_len", "d_model", "num_heads", "ff_dim", "repetitions", "steps", "matmul_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.d_model % args.num_heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --num-heads ({args.num_heads})")
    return args


def block_flops(batch: int, seq_len: int, d_model: int, ff_dim: int) -> dict:
    """Multiply-add FLOPs (2 per MAC) of one forward pass, matmuls only."""
    tokens = batch * seq_len
    parts = {
        "qkv_projection": 2 * tokens * d_model * 3 * d_model,
        "attention_scores": 2 * tokens * seq_len * d_model,
        "attention_context": 2 * tokens * seq_len * d_model,
        "output_projection": 2 * tokens * d_model * d_model,
        "feed_forward": 2 * tokens * d_model * ff_dim * 2,
    }
    forward = sum(parts.values())
    return {"forward": forward, "train_step": 3 * forward, "forward_breakdown": parts}


def build_blocks(args) -> dict:
    common = dict(num_heads=args.num_heads, dropout=args.dropout, activation=args.activation)
    return {
        "suite": TransformerEncoderBlock(
            ff_dim=args.ff_dim, norm_first=True, layer_norm_epsilon=LAYER_NORM_EPSILON, **common
        ),
        "keras_hub": keras_hub.layers.TransformerEncoder(
            intermediate_dim=args.ff_dim, normalize_first=True, layer_norm_epsilon=LAYER_NORM_EPSILON, **common
        ),
        "keras_mha": KerasMHAEncoderBlock(ff_dim=args.ff_dim, **common),
    }


def wrap(block, args) -> keras.Model:
    inputs = keras.Input((args.seq_len, args.d_model), batch_size=args.batch, name="inputs")
    padding_mask = keras.Input((args.seq_len,), batch_size=args.batch, dtype="bool", name="padding_mask")
    outputs = block(inputs, padding_mask=padding_mask)
    model = keras.Model({"inputs": inputs, "padding_mask": padding_mask}, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=True)
    return model


def _sublayers(block) -> tuple:
    """`(mha, attention_norm, ffn_hidden, ffn_output, ffn_norm)` of a peer block."""
    if isinstance(block, KerasMHAEncoderBlock):
        return block.attention, block.attention_norm, block.hidden, block.output_dense, block.feed_forward_norm
    return (
        block._self_attention_layer,
        block._self_attention_layer_norm,
        block._feedforward_intermediate_dense,
        block._feedforward_output_dense,
        block._feedforward_layer_norm,
    )


def copy_suite_weights(suite_block, peer) -> None:
    """Gives `peer` the weights of `suite_block` (fused QKV split into query/key/value)."""
    attention = suite_block.self_attention
    qkv_kernel, qkv_bias = (np.asarray(w) for w in attention.qkv_dense.get_weights())
    mha, attention_norm, hidden, output_dense, feed_forward_norm = _sublayers(peer)
    for i, dense in enumerate((mha._query_dense, mha._key_dense, mha._value_dense)):
        dense.set_weights([qkv_kernel[:, i], qkv_bias[i]])
    mha._output_dense.set_weights(attention.output_dense.get_weights())
    attention_norm.set_weights(suite_block.attention_norm.get_weights())
    hidden.set_weights(suite_block.feed_forward.hidden_dense.get_weights())
    output_dense.set_weights(suite_block.feed_forward.output_dense.get_weights())
    feed_forward_norm.set_weights(suite_block.feed_forward_norm.get_weights())


def make_inputs(args) -> tuple[dict, tf.Tensor]:
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.seq_len // 2 + 1, args.seq_len + 1, size=args.batch)
    padding_mask = np.arange(args.seq_len)[None, :] < lengths[:, None]
    inputs = {
        "inputs": tf.constant(rng.standard_normal((args.batch, args.seq_len, args.d_model), dtype=np.float32)),
        "padding_mask": tf.constant(padding_mask),
    }
    target = tf.constant(rng.standard_normal((args.batch, args.seq_len, args.d_model), dtype=np.float32))
    return inputs, target


def output_differences(models: dict, inputs: dict) -> dict:
    """Max |peer - suite| of inference outputs at unpadded positions."""
    real = inputs["padding_mask"].numpy()
    reference = models["suite"](inputs, training=False).numpy()[real]
    return {
        name: float(np.max(np.abs(models[name](inputs, training=False).numpy()[real] - reference)))
        for name in models
        if name != "suite"
    }


def make_runners(models: dict, inputs: dict, target, args) -> dict:
    """Zero-argument callables that run one step and wait for its result."""
    runners = {}
    for name, model in models.items():
        infer = tf.function(lambda x, model=model: model(x, training=False), jit_compile=True)
        runners[(name, "train")] = lambda model=model: model.train_on_batch(inputs, target)
        runners[(name, "inference")] = lambda infer=infer: infer(inputs)[0, 0, 0].numpy()
    matmul = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    rng = np.random.default_rng(args.seed + 1)
    n = args.matmul_size
    tokens = args.batch * args.seq_len
    operands = {
        "square": (n, n, n),
        "ffn_shape": (tokens, args.d_model, args.ff_dim),
    }
    for name, (m, k, n_out) in operands.items():
        a = tf.constant(rng.standard_normal((m, k), dtype=np.float32))
        b = tf.constant(rng.standard_normal((k, n_out), dtype=np.float32))
        runners[("matmul", name)] = lambda a=a, b=b: matmul(a, b)[0, 0].numpy()
    return runners, operands


def time_interleaved(runners: dict, args) -> dict:
    """Wall and process-CPU seconds per call of each runner, one entry per repetition
    (the mean of `steps` calls). The order rotates every repetition."""
    for run in runners.values():
        for _ in range(args.warmup):
            run()
    keys = list(runners)
    samples = {key: {"wall": [], "cpu": []} for key in keys}
    for repetition in range(args.repetitions):
        shift = repetition % len(keys)
        for key in keys[shift:] + keys[:shift]:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                runners[key]()
            samples[key]["wall"].append((time.perf_counter() - wall) / args.steps)
            samples[key]["cpu"].append((time.process_time() - cpu) / args.steps)
    return samples


def summarise(samples: dict, flops: float, tokens: int | None = None) -> dict:
    median = statistics.median(samples["wall"])
    summary = {
        "seconds_median": median,
        "seconds_min": min(samples["wall"]),
        "seconds_max": max(samples["wall"]),
        "cpu_seconds_median": statistics.median(samples["cpu"]),
        "gflops_per_s": flops / median / 1e9,
        "gflops_per_cpu_s": flops / statistics.median(samples["cpu"]) / 1e9,
    }
    if tokens is not None:
        summary["tokens_per_s"] = tokens / median
    return summary


def paired_speedup(samples: dict, peer: str, mode: str, clock: str) -> float:
    """Median over repetitions of `peer time / suite time` measured in the same round."""
    suite, other = samples[("suite", mode)][clock], samples[(peer, mode)][clock]
    return statistics.median(o / s for s, o in zip(suite, other))


def report(args, seconds: dict, operands: dict, parameters: dict) -> dict:
    """Figures per block and matmul from the timing samples of `time_interleaved`."""
    flops = block_flops(args.batch, args.seq_len, args.d_model, args.ff_dim)
    tokens = args.batch * args.seq_len
    matmul = {
        name: {"shape_mkn": list(shape), **summarise(seconds[("matmul", name)], 2 * np.prod(shape))}
        for name, shape in operands.items()
    }
    peak = {clock: max(entry[f"gflops_per_{clock}"] for entry in matmul.values()) for clock in ("s", "cpu_s")}
    blocks = {}
    for name in parameters:
        blocks[name] = {"parameters": parameters[name]}
        for mode, mode_flops in (("train", flops["train_step"]), ("inference", flops["forward"])):
            summary = summarise(seconds[(name, mode)], mode_flops, tokens)
            summary["fraction_of_matmul_peak"] = summary["gflops_per_s"] / peak["s"]
            summary["fraction_of_matmul_peak_cpu"] = summary["gflops_per_cpu_s"] / peak["cpu_s"]
            blocks[name][mode] = summary
    return {
        "config": {
            key: getattr(args, key)
            for key in (
                "batch", "seq_len", "d_model", "num_heads", "ff_dim", "dropout", "activation",
                "repetitions", "steps", "warmup", "matmul_size", "seed", "quick",
            )
        } | {"norm_first": True, "layer_norm_epsilon": LAYER_NORM_EPSILON, "tokens_per_step": tokens},
        "flops": flops,
        "matmul": matmul,
        "matmul_peak_gflops_per_s": peak["s"],
        "matmul_peak_gflops_per_cpu_s": peak["cpu_s"],
        "blocks": blocks,
        "suite_speedup": {
            f"{mode}_{clock}": {
                peer: paired_speedup(seconds, peer, mode, clock) for peer in ("keras_hub", "keras_mha")
            }
            for mode in ("train", "inference")
            for clock in ("wall", "cpu")
        },
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = machine_info(keras_hub=keras_hub.__version__, keras_backend=keras.backend.backend(),
                           load_average_start=load_average())
    keras.utils.set_random_seed(args.seed)
    blocks = build_blocks(args)
    models = {name: wrap(block, args) for name, block in blocks.items()}
    for name in ("keras_hub", "keras_mha"):
        copy_suite_weights(blocks["suite"], blocks[name])
    inputs, target = make_inputs(args)
    max_abs_diff = output_differences(models, inputs)
    parameters = {name: model.count_params() for name, model in models.items()}

    runners, operands = make_runners(models, inputs, target, args)
    seconds = time_interleaved(runners, args)
    machine["load_average_end"] = load_average()
    return {
        "benchmark": "bench_backbone",
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine,
        **report(args, seconds, operands, parameters),
        "max_abs_diff_vs_suite": max_abs_diff,
    }


if __name__ == "__main__":
    emit(main())
