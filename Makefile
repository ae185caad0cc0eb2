# The README's two commands: `make report` builds the study, `make test` runs the tests (what CI runs).
# Both create .venv from the pinned requirements on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: report test test-fast check coverage venv clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints-build.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PIP_BUILD_CONSTRAINT=$(CURDIR)/constraints-build.txt $(PY) -m pip install -q -r requirements.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q --no-deps -e .
	touch $@

report: $(STAMP)
	$(PY) -m segattack report

test: $(STAMP)
	$(PY) -m pytest -q

# the suite without the end-to-end tests marked slow (under 3 minutes on 2 cores)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# lint, format check and types over the whole package (and the tests and benchmarks for lint)
check: $(STAMP)
	$(VENV)/bin/ruff check segattack tests benchmarks
	$(VENV)/bin/ruff format --check segattack tests benchmarks
	$(VENV)/bin/mypy

coverage: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --cov --cov-report=term

clean:
	rm -rf reports/runs reports/studies reports/index.html reports/report.ipynb
