# Two entry points do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfprune-installed
PYTEST_WORKERS ?= 2

.PHONY: venv demo test docs docs-serve bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[cpu,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/tfprune-demo

test: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q tests

# The documentation site (MkDocs + Material + mkdocstrings), built strictly into site/.
DOCS_STAMP := $(VENV)/.tfprune-docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[cpu,test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python -m mkdocs build --strict -d site

docs-serve: $(DOCS_STAMP)
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf $(VENV) build *.egg-info demo_output site
