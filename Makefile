# The README's two commands: `make report` builds the study, `make test` runs the tests (what CI runs).
# Both create .venv from the pinned requirements on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: report test test-fast browser check coverage venv clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints-build.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PIP_BUILD_CONSTRAINT=$(CURDIR)/constraints-build.txt $(PY) -m pip install -q -r requirements.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q --no-deps -e .
	touch $@

report: $(STAMP)
	$(PY) -m segattack report

# the whole suite, its 15 slowest tests listed last
test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15

# the suite without the end-to-end tests marked slow (under 2 minutes on 2 cores)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=15

# tests/test_browser.py opens the report in headless Chromium: Debian's package (Playwright's own
# browser download needs the network). Installed with apt-get when absent, as root or through sudo;
# where neither works, make stops before any test with the command that installs it.
CHROMIUM_INSTALL := sudo apt-get install chromium
browser:
	@if [ -n "$$SEGATTACK_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
	    || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; else sudo=none; fi; \
	if [ "$$sudo" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing headless Chromium for tests/test_browser.py (apt-get install chromium)"; \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	        && command -v chromium >/dev/null 2>&1 && exit 0; \
	fi; \
	echo "make test: tests/test_browser.py needs headless Chromium, which is missing and could not be installed." >&2; \
	echo "Install it with: $(CHROMIUM_INSTALL)   (or set SEGATTACK_CHROMIUM to a Chromium executable)" >&2; \
	exit 1

# lint, format check and types over the whole package (and the tests and benchmarks for lint)
check: $(STAMP)
	$(VENV)/bin/ruff check segattack tests benchmarks
	$(VENV)/bin/ruff format --check segattack tests benchmarks
	$(VENV)/bin/mypy

coverage: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --cov --cov-report=term

clean:
	rm -rf reports/runs reports/studies reports/index.html reports/report.ipynb
