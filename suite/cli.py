"""The `suite` command: train, evaluate, predict and export any domain's task."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from pathlib import Path

import yaml

from suite.config import ConfigError, flat_fields



def _tasks() -> dict:
    from suite.tasks import TASKS

    return TASKS


def _config_source(task_class, config: Path | None) -> Path | None:
    """`--config`, else the YAML the task's package ships, else None (the dataclass defaults)."""
    if config is not None:
        return config
    default = task_class.config_file()
    return default if default.is_file() else None


def _config_help(task_class) -> str:
    return (f"a YAML config file, or the name of one the task ships: {', '.join(task_class.config_names())} "
            f"(default: {task_class.config_file()})")


def _add_config_flags(parser: argparse.ArgumentParser, config_class) -> list[str]:
    keys = []
    group = parser.add_argument_group("config keys (override the YAML; values are parsed as YAML)")
    for key, annotation, default in flat_fields(config_class):
        group.add_argument(f"--{key}", dest=f"set:{key}", metavar="VALUE", default=argparse.SUPPRESS,
                           help=f"default: {default!r}")
        keys.append(key)
    return keys


def _overrides(args: argparse.Namespace) -> dict:
    return {
        name.removeprefix("set:"): yaml.safe_load(value)
        for name, value in vars(args).items()
        if name.startswith("set:")
    }


def _train(domain: str, argv: list[str]) -> dict:
    task_class = _tasks()[domain]
    parser = argparse.ArgumentParser(prog=f"suite train {domain}", description=task_class.__doc__)
    parser.add_argument("--config", type=Path, help=_config_help(task_class))
    parser.add_argument("--output-dir", type=Path, help="run folder (default: runs/<domain>/<timestamp>)")
    parser.add_argument("--export-dir", type=Path, help="also export a SavedModel under this folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run checkpointed in --output-dir (after a crash or kill)")
    parser.add_argument("--strategy", dest="set:training.strategy", metavar="NAME", default=argparse.SUPPRESS,
                        help="tf.distribute strategy, as --training.strategy: default, mirrored (all local GPUs), "
                        "multi_worker (cluster from TF_CONFIG) or tpu")
    _add_config_flags(parser, task_class.config_class)
    args = parser.parse_args(argv)
    config = task_class.resolve_config(_config_source(task_class, args.config), _overrides(args))
    if args.resume and args.output_dir is None:
        parser.error("--resume needs the --output-dir of the run to continue")
    output_dir = args.output_dir or Path("runs") / domain / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    task, metrics = task_class.run(config, output_dir, resume=args.resume)
    summary = {"output_dir": str(output_dir), "saved_task": str(output_dir / "task"), "metrics": metrics}
    if args.export_dir:
        summary["export"] = str(task.export(args.export_dir))
    return summary


def _bench(domain: str, argv: list[str]) -> dict:
    from suite.bench import benchmark

    task_class = _tasks()[domain]
    parser = argparse.ArgumentParser(
        prog=f"suite bench {domain}",
        description="Speed of a task config: XLA training steps, Python-side inference and the exported "
        "SavedModel's serving at batch 1 and 64 (warm-up and compilation timed apart). Prints one JSON object.",
    )
    parser.add_argument("--config", type=Path, help=_config_help(task_class))
    parser.add_argument("--data", help="data in the domain's format (default: the config's training data)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps, inference batches and "
                        "serving calls per batch size (default: 20)")
    _add_config_flags(parser, task_class.config_class)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    config_source = _config_source(task_class, args.config)
    overrides = _overrides(args)
    config = task_class.resolve_config(config_source, overrides)
    return benchmark(task_class, config, args.data, args.steps, source=config_source, overrides=overrides)


def _run(args: argparse.Namespace, rest: list[str]):
    if args.command == "train":
        return _train(args.domain, rest)
    if args.command == "bench":
        return _bench(args.domain, rest)
    if args.command == "serving-config":
        from suite.export import write_serving_config

        return {"models_config": str(write_serving_config(args.export_dir, args.output))}
    from suite.tasks import SentenceEncoder, Task

    if args.command == "export" and args.pretrained:
        task = SentenceEncoder.from_pretrained(args.pretrained)
    else:
        task = Task.load(args.task)
    if args.command == "evaluate":
        return task.evaluate(args.data)
    if args.command == "predict":
        return task.cli_predict(args.inputs)
    return {"export": str(task.export(args.export_dir, args.model_name, args.version, args.jit_compile))}


def main(argv: list[str] | None = None) -> int:
    """Runs the `suite` command; its result goes to stdout as JSON, progress to stderr."""
    argv = sys.argv[1:] if argv is None else argv
    tasks = _tasks()
    listing = "\n".join(f"  {name:<22}{(task.__doc__ or '').strip().splitlines()[0]}" for name, task in sorted(tasks.items()))
    parser = argparse.ArgumentParser(prog="suite", description="Train, evaluate, predict with and export suite tasks.",
                                     epilog=f"tasks (the domain of `suite train` and `suite bench`):\n{listing}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a domain's task from its YAML config", add_help=False)
    train.add_argument("domain", help=f"one of {', '.join(sorted(tasks))}")
    bench = commands.add_parser("bench", help="speed of a domain's task config (training, inference, serving)",
                                add_help=False)
    bench.add_argument("domain", help="any domain `suite train` takes; the same --config and --<key> flags")
    evaluate = commands.add_parser("evaluate", help="metrics of a saved task on a data file")
    evaluate.add_argument("task", type=Path, help="a saved task folder")
    evaluate.add_argument("--data", required=True, help="data file in the domain's format")
    predict = commands.add_parser("predict", help="predictions of a saved task")
    predict.add_argument("task", type=Path, help="a saved task folder")
    predict.add_argument("inputs", nargs="+", help="inputs in the domain's form (texts, file paths, ...)")
    export = commands.add_parser("export", help="export a saved task, or a pretrained checkpoint's sentence "
                                 "encoder, as a TF Serving SavedModel")
    export.add_argument("task", type=Path, nargs="?", help="a saved task folder")
    export.add_argument("--pretrained", metavar="SOURCE", help="instead of a task: a BERT-family checkpoint (folder "
                        "or name, e.g. all-MiniLM-L6-v2) exported as a sentence encoder")
    export.add_argument("--export-dir", type=Path, default=Path("saved_models"))
    export.add_argument("--model-name", help="default: the domain")
    export.add_argument("--version", type=int, help="default: the next integer version")
    export.add_argument("--jit-compile", action="store_true", help="trace serving functions with XLA")
    config = commands.add_parser("serving-config", help="write models.config listing every exported model")
    config.add_argument("--export-dir", type=Path, default=Path("saved_models"))
    config.add_argument("--output", type=Path, help="default: <export-dir>/models.config")

    args, rest = parser.parse_known_args(argv)
    if args.command in ("train", "bench") and args.domain not in tasks:
        parser.error(f"unknown domain {args.domain!r}; choose from {sorted(tasks)}")
    if args.command not in ("train", "bench") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "export" and (args.task is None) == (args.pretrained is None):
        parser.error("export takes a saved task folder or --pretrained SOURCE (one of the two)")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = _run(args, rest)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"suite {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
