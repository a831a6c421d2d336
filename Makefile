# The two set-up commands of the README. Both create .venv at the repo root if missing and install the pinned set.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed

.PHONY: install demo test experiments lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PYTHON) || python3 -m venv $(VENV)
	# torch first, from the pair that installs on these machines, so nothing pulls another multi-GB build
	$(PYTHON) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet -r requirements.lock
	$(PYTHON) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m zoo fit --config recipes/stage2.yaml

test: $(STAMP)
	$(PYTHON) -m pytest -q

# The paper's ablations (Tables 3 and 4) at demo scale: under an hour on 2 CPU cores; writes docs/experiments.md.
experiments: $(STAMP)
	$(PYTHON) experiments/ablations.py

# Re-pin after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m pip freeze --exclude-editable | grep -v '^zoo' > requirements.lock

clean:
	rm -rf $(VENV) checkpoints/*/ generated
