# The README's two commands: `make report` builds the study, `make test` runs the tests.
# Both create .venv from the pinned requirements on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: report test venv clean

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

clean:
	rm -rf reports/runs reports/index.html
