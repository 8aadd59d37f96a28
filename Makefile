# Two commands do all the set-up on a fresh machine (see README):
#   make run    create .venv, install sk-edge, run the main job on the bundled defaults
#   make test   create .venv, install sk-edge with its test extras, run the test suite; then
#               the device job in a second, torch-free environment (make device-test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed as a matching pair: timm needs torchvision, and a
# torchvision built for another torch fails at import. Override on other platforms, e.g.
#   make test TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1

# The device side: a second environment with a plain `pip install .` (no PyTorch, no timm),
# as on a Jetson; it must build --from, verify (against the PyTorch outputs the host stored in
# reference.npz), bench and export a work directory made above.
DEVICE_VENV ?= .venv-device
DEVICE_WORKDIR ?= build/device-workdir
SOURCES := $(shell find sk_edge -name '*.py' -o -name '*.pt' -o -name '*.png' -o -name '*.jpg')

.PHONY: run test device-test clean

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
	$(MAKE) device-test

$(DEVICE_VENV)/.installed: pyproject.toml Makefile $(SOURCES)
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet . pytest
	touch $@

# Runs from inside build/ so that `import sk_edge` finds the installed package, not this checkout.
device-test: $(VENV)/.installed $(DEVICE_VENV)/.installed
	rm -rf $(DEVICE_WORKDIR)
	$(BIN)/sk-edge build --precision int8 --num-images 64 -w $(DEVICE_WORKDIR)
	cd $(dir $(DEVICE_WORKDIR)) && SK_EDGE_DEVICE_WORKDIR=$(abspath $(DEVICE_WORKDIR)) \
		$(abspath $(DEVICE_VENV))/bin/python -m pytest -q -p no:cacheprovider $(abspath tests/test_device_flow.py)

clean:
	rm -rf $(VENV) $(DEVICE_VENV) build workdir .pytest_cache
