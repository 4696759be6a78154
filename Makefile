# torchspine: two commands, both working on a fresh clone.
#   make demo   set up .venv and run the main job: train a small SpineNet RetinaNet on CPU on the built-in data,
#               evaluate it (COCO table), draw its predictions, print where everything is (~11 min on 2 cores)
#   make test   set up .venv (with dev tools) and .venv-tf (official TensorFlow code), run the whole test suite

PYTHON ?= python3
# torch/torchvision as pinned for this project (installed from the local wheel cache where there is one).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
PY := $(VENV)/bin/python
TF_VENV := .venv-tf

.PHONY: demo test test-fast lint format tf-env clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(TF_VENV)/.installed: requirements/tf-parity.txt requirements/tf-parity-nodeps.txt
	test -x $(TF_VENV)/bin/python || $(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip install --quiet -r requirements/tf-parity.txt
	$(TF_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/tf-parity-nodeps.txt
	touch $@

tf-env: $(TF_VENV)/.installed

# DEMO_ARGS passes flags through, e.g. make demo DEMO_ARGS="--backbone resnet50_fpn" (the ResNet-FPN baseline).
DEMO_ARGS ?=
demo: $(VENV)/.installed
	$(VENV)/bin/torchspine demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev $(TF_VENV)/.installed
	TORCHSPINE_REQUIRE_TF=1 $(PY) -m pytest

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not slow and not tf"

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(TF_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
