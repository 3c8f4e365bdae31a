# bsopt: two commands do everything on a fresh machine.
#   make demo   runs the main job end to end on real market data
#   make test   runs the whole test suite
# Both create or refresh the virtual environment (.venv) themselves.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
GEN    := libs/src/bsopt/.generated
PYPROJECTS := libs/pyproject.toml $(wildcard services/*/pyproject.toml) clients/cli/pyproject.toml
SERVICES := auth-server resource-api broker-gateway rl-trainer ml-scorer digest-worker

.PHONY: venv proto test demo up clean

venv: $(STAMP) $(GEN)

$(STAMP): constraints.txt $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned, so no other requirement can pull a CUDA build
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt grpcio-tools hatchling \
	  -e 'libs[embedded,test]' $(addprefix -e services/,$(SERVICES)) -e clients/cli
	touch $@

# Regenerate the Python code for every contract under proto/ (never hand-edited).
proto: $(STAMP)
	rm -rf libs/src/bsopt
	mkdir -p libs/src/bsopt
	$(BIN)/python -m grpc_tools.protoc -I proto \
	  --python_out=libs/src --pyi_out=libs/src --grpc_python_out=libs/src $(PROTOS)
	touch $(GEN)

$(GEN): $(PROTOS) $(STAMP)
	$(MAKE) proto

test: venv
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/bsopt demo

up: venv
	$(BIN)/bsopt up

clean:
	rm -rf $(VENV) libs/src/bsopt .state demo-report
