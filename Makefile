# Two commands on a fresh Linux machine with Python 3.11 (no GPU needed):
#   make demo   -- set up .venv and run the main job (short real training run, figures, results)
#   make test   -- set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MNIST_DIR ?= $(firstword $(wildcard ../shared/data/mnist))
DEMO_DIR ?= runs/demo

.PHONY: setup test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -n 2 tests

demo: setup
	$(PY) experiments/demo_sampler.py --out $(DEMO_DIR)

clean:
	rm -rf $(VENV) runs
