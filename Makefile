# The commands people run. Each one creates the virtualenv it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov (the template's security scan) in a virtualenv of its own: its pins clash with ours
# (see infra/checkov-requirements.txt). The scan test runs .venv-checkov/bin/checkov, once: its bytecode
# is written as it imports, not for the thousands of modules it never loads (--no-compile).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: venv checkov demo test lint typecheck unit pytest bench package sam-build clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(CHECKOV_STAMP): infra/checkov-requirements.txt
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --no-compile -r infra/checkov-requirements.txt
	touch $(CHECKOV_STAMP)

venv: $(STAMP)

checkov: $(CHECKOV_STAMP)

## Run the whole pipeline locally: moto + the fake OpenAI API (or the real API with OPENAI_API_KEY).
demo: venv
	$(BIN)/python -m infra.demo

## Lint, types and the whole test suite (what CI runs). The two virtualenvs are built at once (each
## waits mostly on downloads), then lint, types and the tests in order.
test:
	$(MAKE) -j2 venv checkov
	$(MAKE) lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

## Unit tests of the product only (fast; no servers, nothing but .venv).
unit: venv
	$(BIN)/pytest tests/unit

## Every test: unit, integration (real handler, moto server, fake OpenAI API), the template's and the
## local tooling's own, spread test by test over $(WORKERS) pytest-xdist workers: most tests wait on a server
## or a subprocess, so more workers than cores keeps both cores busy. Each worker starts its own servers; a
## module whose fixtures are costly (the bundle builds, the checkov scan) stays on one (xdist_group).
WORKERS ?= 4
pytest: venv checkov
	$(BIN)/pytest -n $(WORKERS) --dist loadgroup

## Throughput / memory / AWS-call benchmark against the fake OpenAI API.
bench: venv
	$(BIN)/python -m infra.bench

## The Lambda bundle (arm64, Python 3.12) from wheels, without Docker or the SAM CLI:
## dist/promptdrop-lambda-arm64.zip and the template that deploys it (README: Deploy to AWS).
package: venv
	$(BIN)/python -m infra.package

## The bundle built by the SAM CLI instead (.aws-sam/build), for `sam deploy`.
sam-build:
	sam build

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam dist .mypy_cache .ruff_cache .pytest_cache
