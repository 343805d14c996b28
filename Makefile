# The README's commands. Everything installs into .venv from setup.cfg.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= demo-run

.PHONY: demo test test-slow test-slurm bench bench-full clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet -e '.[aoflagger]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dsa110-engine --config configs/default.toml demo --workdir $(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --scale small

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --scale full

clean:
	rm -rf $(RUN_DIR) bench-run .pytest_cache
