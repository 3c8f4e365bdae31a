# bsopt: two commands do everything on a fresh machine.
#   make demo   runs the main job end to end on real market data
#   make test   runs the whole test suite
# Both create or refresh the virtual environment (.venv) themselves.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
# Directories too: their mtime changes when a .proto is added, removed or renamed
# (not proto/ itself, which would name the phony target `proto`).
PROTO_DIRS := $(shell find proto -mindepth 1 -type d)
GEN    := libs/src/bsopt/.generated
CODEGEN := scripts/codegen.py
# Every extra of bsopt-libs: the dev venv runs every service, the CLI and the tests.
LIBS_EXTRAS := http,marketdata,embedded,test
PYPROJECTS := libs/pyproject.toml $(wildcard services/*/pyproject.toml) clients/cli/pyproject.toml
SERVICES := auth-server resource-api broker-gateway rl-trainer ml-scorer digest-worker

.PHONY: venv proto lint test demo up clean

venv: $(STAMP) $(GEN)

$(STAMP): constraints.txt $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned, so no other requirement can pull a CUDA build
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt grpcio-tools hatchling \
	  -e 'libs[$(LIBS_EXTRAS)]' $(addprefix -e services/,$(SERVICES)) -e clients/cli
	touch $@

# Regenerate the Python code for every contract under proto/ (never hand-edited).
# The one codegen step, shared with every Dockerfile; it replaces libs/src/bsopt/ as a
# whole and writes the $(GEN) stamp last.
proto: $(STAMP)
	$(BIN)/python $(CODEGEN)

$(GEN): $(PROTOS) $(PROTO_DIRS) $(CODEGEN) $(STAMP)
	$(MAKE) proto

# ruff over the whole tree; mypy (strict) over what [tool.mypy] in pyproject.toml lists:
# libs/src/bsopt_common and every service's domain/ package.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/bsopt demo

up: venv
	$(BIN)/bsopt up

clean:
	rm -rf $(VENV) libs/src/bsopt .state demo-report
