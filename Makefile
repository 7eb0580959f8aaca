# Everything builds from nothing: `make test` on a fresh clone creates .venv first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
PYTEST  := $(PY) -m pytest -n 2 --dist loadfile

.PHONY: demo test test-all bench clean venv

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[train,deploy,explain,test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	.venv/bin/resnetkit train --out runs/demo

test: $(STAMP)
	$(PYTEST) -q

test-all: $(STAMP)
	$(PYTEST) -q -m ''

bench: $(STAMP)
	$(PY) benchmarks/inference.py

clean:
	rm -rf .venv runs build dist
