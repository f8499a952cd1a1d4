"""One Task contract: no domain overrides it, configs ship with the package, every data config has
train/validation/test, and the `suite` command finds every task from any folder."""

import dataclasses
import json
import typing

import pytest

from suite.cli import main as suite_main
from suite.config import ConfigError
from suite.core.model import DomainModel
from suite.core.task import Task
from suite.forecasting.model import PatchForecaster
from suite.recommendation.model import SASRec
from suite.tasks import TASKS, Forecaster, Recommender
from suite.text.encoder import TextEncoder
from suite.translation.model import TranslationModel

CONTRACT = ("train", "run", "fit", "evaluate", "save", "load", "export", "data_parts")
TINY = {"num_layers": 1, "d_model": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0, "max_length": 16}


@pytest.mark.parametrize("domain", sorted(TASKS))
def test_no_domain_overrides_the_contract_and_configs_ship_with_the_package(domain):
    task_class = TASKS[domain]
    assert [name for name in CONTRACT if name in vars(task_class)] == []
    data = typing.get_type_hints(task_class.config_class)["data"]
    assert {"train", "validation", "test"} <= {field.name for field in dataclasses.fields(data)}
    if domain != "sentence_encoder":
        assert task_class.config_file().is_file(), task_class.config_file()
        task_class.resolve_config(task_class.config_file())


@pytest.mark.parametrize("model", [
    TextEncoder(50, TINY, type_vocabulary_size=2),
    TranslationModel(40, 30, TINY, tie_embeddings=False),
    PatchForecaster(16, 4, 2, 4, 4, TINY, quantiles=(0.1, 0.9)),
    SASRec(12, {**TINY, "causal": True, "position": "learned"}),
], ids=lambda model: type(model).__name__)
def test_domain_models_round_trip_their_config_with_the_dtype(model):
    assert isinstance(model, DomainModel)
    config = model.get_config()
    assert set(model.config_arguments) < set(config) and {"backbone", "dtype", "name"} <= set(config)
    json.dumps(config)
    rebuilt = type(model).from_config(config)
    assert rebuilt.get_config() == config and rebuilt.count_params() == model.count_params()


def test_a_split_and_separate_validation_files_exclude_each_other():
    with pytest.raises(ConfigError, match="either split .* or validation/test files"):
        Forecaster.resolve_config(None, {"data.validation": "other.csv"})
    with pytest.raises(ConfigError, match="either split .* or validation/test files"):
        Recommender.resolve_config(None, {"data.test": "other.csv"})
    config = Forecaster.resolve_config(None, {"data.split": None, "data.validation": "data/forecasting/sample.csv"})
    assert config.data.validation.endswith("sample.csv")


def test_data_parts_read_the_configured_data_and_cut_it_by_the_split_policy(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    config = Forecaster.resolve_config(None, {"lookback": 48, "horizon": 12, "patch_length": 8, "patch_stride": 8})
    parts = Forecaster.data_parts(config)
    assert [parts[name].name for name in ("train", "validation", "test")] == ["train", "validation", "test"]
    assert parts["validation"].train is parts["train"].frame
    recommendation = Recommender.data_parts(Recommender.resolve_config())
    assert len(recommendation["test"]) == len(recommendation["validation"]) > 0
    assert Task.evaluate.__doc__ and "part" in Task.evaluate.__doc__


def test_suite_help_lists_every_task_and_train_finds_packaged_configs_from_any_folder(tmp_path, monkeypatch, capsys,
                                                                                   repo_root):
    with pytest.raises(SystemExit):
        suite_main(["--help"])
    listing = capsys.readouterr().out
    assert all(f"  {domain} " in listing for domain in TASKS), listing
    monkeypatch.chdir(tmp_path)
    sample = repo_root / "data" / "forecasting" / "sample.csv"
    argv = ["train", "forecasting", f"--data.train={sample}", "--data.split=[0.7, 0.1, 0.2]", "--lookback=48",
            "--horizon=12", "--patch_length=8", "--patch_stride=8", "--training.epochs=1",
            "--backbone.num_layers=1", "--output-dir", str(tmp_path / "run")]
    assert suite_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["data_sizes"]["train"] > 0 and "mse" in summary["metrics"]["test"]["model"]
    assert suite_main(["train", "forecasting", "--training.epochs=1"]) == 2
    assert "ETTh1.csv" in capsys.readouterr().err  # the packaged config was found; its data is not here
    assert suite_main(["train", "text_classification", "--config", "text_classification_imdb",
                       "--output-dir", str(tmp_path / "imdb")]) == 2
    assert "data.train is empty" in capsys.readouterr().err  # the config names no data; nothing falls back
    assert not (tmp_path / "imdb").exists()
