"""`suite bench <domain>`: one JSON object of positive, finite speed figures for a tiny config."""

import json
import math

import pytest

from suite.cli import main

TINY_BACKBONE = ["--backbone.num_layers", "1", "--backbone.d_model", "16", "--backbone.num_heads", "2",
                 "--backbone.ff_dim", "32"]
CASES = {
    # string inputs, several sequence buckets
    "text_classification": ["--data", "data/text_classification/train.csv", "--data.text_columns", "[text]",
                            "--vocabulary_size", "200", "--bucket_lengths", "[16, 32]", "--backbone.max_length", "32",
                            "--training.batch_size", "16"],
    # a 2-D string input beside a scalar one (`k`), from Recommender.example_inputs
    "recommendation": ["--data", "data/recommendation/interactions.csv", "--max_length", "20", "--window_stride", "20",
                       "--backbone.max_length", "20"],
}


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("domain", sorted(CASES))
def test_suite_bench_prints_positive_finite_figures(domain, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    assert main(["bench", domain, "--steps", "2", *TINY_BACKBONE, *CASES[domain]]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["machine"]["cpu_count"] >= 1 and len(result["machine"]["load_average"]) == 3
    assert {"tensorflow", "keras"} <= set(result["machine"])
    assert result["config"]["domain"] == domain
    assert result["config"]["backbone"]["d_model"] == 16 and result["config"]["parameters"] > 0
    figures = {"training": result["training"], "inference": result["inference"],
               "serving_batch_1": result["serving"]["batch_1"], "serving_batch_64": result["serving"]["batch_64"]}
    for name, figure in figures.items():
        assert figure["steps"] == 2, name
        for key in ("examples_per_s", "steps_per_s"):
            assert _positive_finite(figure[key]), (name, key, figure[key])
        assert math.isfinite(figure["warmup_seconds"]) and figure["warmup_seconds"] >= 0, name
    assert result["serving"]["batch_1"]["examples"] == 2 and result["serving"]["batch_64"]["examples"] == 128
    assert _positive_finite(result["wall_seconds"]) and _positive_finite(result["cpu_seconds"])


def test_suite_bench_rejects_zero_steps(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "forecasting", "--steps", "0"])
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_suite_bench_refuses_a_config_that_names_no_data(capsys):
    assert main(["bench", "text_classification", "--config", "text_classification_imdb"]) == 2
    assert "data.train is empty; pass `--data PATH`" in capsys.readouterr().err
