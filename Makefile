# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Train both models briefly on generated data, evaluate them and annotate a small folder.
# Everything lands in demo_output/.
demo: $(STAMP)
	$(PY) jobs/demo.py --output demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf demo_output
