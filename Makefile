# Two commands do all the set-up on a fresh machine (see README):
#   make run    create .venv, install sk-edge, run the main job on the bundled defaults
#   make test   create .venv, install sk-edge with its test extras, run the test suite; then
#               the device job in a second, torch-free environment (make device-test), then the
#               C++ runtime built against four TensorRT header releases and against the real
#               TensorRT-RTX library, with its tests (make cpp-test)
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

# The C++ runtime (cpp/): compiled and linked against each TensorRT release's public headers with a
# stand-in libnvinfer (no TensorRT library can be installed here), then its tests. One CUDA
# architecture (Orin's) keeps the four builds short; a device build sets its own.
TRT_HEADERS := 8.5.3 10.3.0 10.13.0 11.1.0
CPP_FIXTURES := build/cpp-fixtures
# And against NVIDIA's real TensorRT-RTX library: the headers of 1.6.1 (the newest public ones) with the
# library of the same release from PyPI (minor releases are not ABI-compatible); its builder and ONNX
# parser need no GPU, so a ctest builds an engine through the C++ API.
RTX_HEADERS := rtx-1.6.1
RTX_LIBS := tensorrt-rtx-cu13-libs==1.6.1.120
RTX_LIB_DIR := build/tensorrt-rtx-1.6.1
# Only engine.cpp (and the stand-in) include TensorRT's headers: with ccache (cpp/install-deps.sh installs it)
# the five builds compile the other sources, the CUDA kernels among them, once.
CPP_LAUNCHER := $(if $(shell command -v ccache),-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)

.PHONY: run test lint device-test cpp-test cpp-builds cpp-embed docs clean

# --no-compile: pip would byte-compile every file of torch's 6 GB install (CI time); Python compiles
# what it imports, on first import.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	touch $@

# The main job on the bundled defaults: the trained reference model, calib_data/, INT8.
# Without TensorRT it stops before the engine, checks the graph on ONNX Runtime and says so.
run: $(VENV)/.installed
	$(BIN)/sk-edge build --precision int8 -w workdir

# pyflakes, pycodestyle's error classes and bugbear (pyproject.toml's [tool.ruff]); ruff's formatter on
# sk_edge/ (a diff is a finding: `ruff format sk_edge` applies it); mypy's default checks on sk_edge/ with
# unannotated bodies checked too (pyproject.toml's [tool.mypy]).
lint: $(VENV)/.installed
	$(BIN)/ruff check sk_edge tests benchmarks examples cpp/tests
	$(BIN)/ruff format --check sk_edge
	$(BIN)/mypy

# The documentation site in site/, strict: a broken link or a reference that does not resolve fails it.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The suite in parallel, one worker per core of a 2-core machine (pytest-xdist); PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

test: $(VENV)/.installed lint docs
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --durations=15
	$(MAKE) device-test
	$(MAKE) cpp-test

$(DEVICE_VENV)/.installed: pyproject.toml Makefile $(SOURCES)
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet --no-compile . pytest
	touch $@

# Runs from inside build/ so that `import sk_edge` finds the installed package, not this checkout.
device-test: $(VENV)/.installed $(DEVICE_VENV)/.installed
	rm -rf $(DEVICE_WORKDIR)
	$(BIN)/sk-edge build --precision int8 --num-images 64 -w $(DEVICE_WORKDIR)
	cd $(dir $(DEVICE_WORKDIR)) && SK_EDGE_DEVICE_WORKDIR=$(abspath $(DEVICE_WORKDIR)) \
		$(abspath $(DEVICE_VENV))/bin/python -m pytest -q -p no:cacheprovider $(abspath tests/test_device_flow.py)

# The packages first, then the builds in a second make: CPP_LAUNCHER is read when that one starts, after
# install-deps.sh has installed ccache.
cpp-test: $(VENV)/.installed
	bash cpp/install-deps.sh
	$(MAKE) cpp-builds

cpp-builds: $(VENV)/.installed
	$(BIN)/python cpp/tests/make_fixtures.py $(CPP_FIXTURES)
	set -e; for v in $(TRT_HEADERS); do \
		cmake -S cpp -B build/cpp-$$v -DTENSORRT_INCLUDE_DIR=$(abspath cpp/third_party/tensorrt)/$$v \
			-DSK_EDGE_STANDIN_NVINFER=ON -DCMAKE_CUDA_ARCHITECTURES=87 -DSK_EDGE_FIXTURES=$(abspath $(CPP_FIXTURES)) \
			-DSK_EDGE_BUILD_GSTREAMER_EXAMPLE=OFF -DCMAKE_BUILD_TYPE=Release $(CPP_LAUNCHER) > build/cpp-$$v.configure.log; \
		cmake --build build/cpp-$$v -j2 > build/cpp-$$v.build.log 2>&1 || { tail -30 build/cpp-$$v.build.log; exit 1; }; \
		echo "TensorRT $$v headers:"; ctest --test-dir build/cpp-$$v --output-on-failure; \
	done
	@echo "add_subdirectory embedding (no GTest, no OpenCV needed):"
	cmake -S cpp/tests/embed -B build/cpp-embed -DTENSORRT_INCLUDE_DIR=$(abspath cpp/third_party/tensorrt)/11.1.0 \
		-DSK_EDGE_STANDIN_NVINFER=ON -DCMAKE_CUDA_ARCHITECTURES=87 -DCMAKE_BUILD_TYPE=Release > build/cpp-embed.configure.log
	grep -q "SK_EDGE_BUILD_TESTS:BOOL=OFF" build/cpp-embed/CMakeCache.txt && ! grep -q "GTest" build/cpp-embed.configure.log
	@# Building it compiles the library a sixth time (about a minute): `make cpp-embed` does, outside CI's budget.
	test -f $(RTX_LIB_DIR)/tensorrt_rtx_libs/libtensorrt_rtx.so.1 || \
		$(BIN)/python -m pip install --quiet --no-deps --target $(RTX_LIB_DIR) '$(RTX_LIBS)'
	cmake -S cpp -B build/cpp-$(RTX_HEADERS) -DTENSORRT_INCLUDE_DIR=$(abspath cpp/third_party/tensorrt)/$(RTX_HEADERS) \
		-DTENSORRT_LIBRARY_DIR=$(abspath $(RTX_LIB_DIR))/tensorrt_rtx_libs -DCMAKE_CUDA_ARCHITECTURES=86 \
		-DSK_EDGE_FIXTURES=$(abspath $(CPP_FIXTURES)) -DCMAKE_BUILD_TYPE=Release $(CPP_LAUNCHER) > build/cpp-$(RTX_HEADERS).configure.log
	cmake --build build/cpp-$(RTX_HEADERS) -j2 > build/cpp-$(RTX_HEADERS).build.log 2>&1 || { tail -30 build/cpp-$(RTX_HEADERS).build.log; exit 1; }
	@echo "TensorRT-RTX $(RTX_HEADERS) headers, linked to the real libtensorrt_rtx:"
	ctest --test-dir build/cpp-$(RTX_HEADERS) --output-on-failure
	@# The GStreamer appsink example (built in this configuration only): it links and answers its usage line.
	build/cpp-$(RTX_HEADERS)/gstreamer_appsink 2> /dev/null; test $$? -eq 2
	@echo "find_package(sk_edge) after cmake --install (no GTest, no OpenCV needed):"
	rm -rf build/cpp-prefix build/cpp-find-package
	cmake --install build/cpp-$(RTX_HEADERS) --prefix build/cpp-prefix > build/cpp-install.log
	cmake -S cpp/tests/find_package -B build/cpp-find-package -DCMAKE_PREFIX_PATH=$(abspath build/cpp-prefix) \
		-DCMAKE_BUILD_TYPE=Release > build/cpp-find-package.configure.log
	cmake --build build/cpp-find-package > build/cpp-find-package.build.log 2>&1 || { tail -30 build/cpp-find-package.build.log; exit 1; }
	@# It loads (the installed library and the real libtensorrt_rtx) and answers its usage line: exit 2.
	build/cpp-find-package/find_package_app > /dev/null; test $$? -eq 2

clean:
	rm -rf $(VENV) $(DEVICE_VENV) build workdir .pytest_cache

# The embedding app built and linked against sk_edge::sk_edge (an NV12 camera frame through Engine::classify).
cpp-embed:
	cmake -S cpp/tests/embed -B build/cpp-embed -DTENSORRT_INCLUDE_DIR=$(abspath cpp/third_party/tensorrt)/11.1.0 \
		-DSK_EDGE_STANDIN_NVINFER=ON -DCMAKE_CUDA_ARCHITECTURES=87 -DCMAKE_BUILD_TYPE=Release > build/cpp-embed.configure.log
	cmake --build build/cpp-embed -j2 --target embed_app
