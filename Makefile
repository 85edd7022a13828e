# The README's two commands: `make demo` (short real training) and `make test` (the test suite).
# Both create the .venv from requirements.txt on first use.
PY := .venv/bin/python
SHARED_DATA := $(wildcard ../shared/data)
export TFCNN_DATA_DIR ?= $(if $(SHARED_DATA),$(abspath $(SHARED_DATA)),$(CURDIR)/data)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint notebooks venv
venv: .venv/.installed

.venv/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $@

demo: .venv/.installed
	$(PY) -m tfcnn.train --config configs/lenet5_mnist_demo.yaml

# The lab notebooks in JupyterLab, from the pinned `notebooks` extra (kept out of requirements.txt: the tests
# execute the notebooks without JupyterLab).
.venv/.notebooks: .venv/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[notebooks]'
	touch $@

notebooks: .venv/.notebooks  # --allow-root: containers run as root (a no-op for other users)
	$(PY) -m jupyter lab notebooks/ --allow-root

# Lint first: the rules are [tool.ruff.lint] in pyproject.toml.
lint: .venv/.installed
	$(PY) -m ruff check tfcnn tests benchmarks

test: lint
	$(PY) -m pytest -q
