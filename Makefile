# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv with Python 3.10 when it is absent and install the pinned
# requirements (a no-op when they are already installed).
PYTHON ?= python3.10
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= output/demo

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@# nnabla's ONNX importer (--model-onnx) without the TensorFlow stack it declares
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@# the project itself, editable: `sgd-influence`, and Dask workers started in any folder
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VPY) train_infl_eval.py --preset demo -o $(OUT)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VPY) -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
