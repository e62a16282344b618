# Two entry points for users (README "Quick start"): `make demo` and `make test`.
# Both create the virtual environment .venv on first use. torch and torchvision are installed first, at
# the versions the published figures used, so the resolver does not reach for a newer multi-GB build.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Named again with the project so the resolver never trades torch away to settle another conflict.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]' $(TORCH)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/advparams sweep configs/quick.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs cache mlflow.db .pytest_cache
