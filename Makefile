# One command runs the demo, one runs the tests. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Versions of torch/torchvision that this project's machines have cached; override on a GPU box if needed.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev,vision,hub]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/robustmix demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
