# Two entry points: `make reproduce` (every figure and table, quick profile) and `make test` (everything CI runs).
# Both create .venv and install the project with its pinned tools on first use.
# `make test-fast` leaves out the tests marked slow (training, whole notebooks): about 2.5 minutes on 2 cores.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.imgsci-installed
PROFILE ?= quick

.PHONY: install reproduce reproduce-full smoke publish test test-fast clean-runs

$(STAMP): setup.py settings.ini
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "imgsci needs Python >= 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (imgsci)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m imgsci.reproduce --profile $(PROFILE)

reproduce-full: $(STAMP)
	$(BIN)/python -m imgsci.reproduce --profile full

smoke: $(STAMP)
	$(BIN)/python -m imgsci.reproduce --profile smoke

# after `make reproduce`: copy _runs/$(PROFILE) into the committed results/$(PROFILE)/ and refresh the README table
publish: $(STAMP)
	$(BIN)/python -m imgsci.reproduce --profile $(PROFILE) --publish results

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

clean-runs:
	rm -rf _runs
