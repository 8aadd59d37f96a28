# Two commands do all the set-up on a fresh machine (see README):
#   make run    create .venv, install sk-edge, run the main job on the bundled defaults
#   make test   create .venv, install sk-edge with its test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed as a matching pair: timm needs torchvision, and a
# torchvision built for another torch fails at import. Override on other platforms, e.g.
#   make test TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job on the bundled defaults: the trained reference model, calib_data/, INT8.
# Without TensorRT it stops before the engine, checks the graph on ONNX Runtime and says so.
run: $(VENV)/.installed
	$(BIN)/sk-edge build --precision int8 -w workdir

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) workdir .pytest_cache
