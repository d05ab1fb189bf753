# The two commands a newcomer needs; each does its own set-up, in a virtual environment of this clone
# (.venv, made by PYTHON and reused): the machine's own Python and its `cifar-hpc` are never touched, and
# deleting the clone deletes everything it installed. Every recipe below finds .venv/bin first on PATH,
# as if activated (`source .venv/bin/activate` does the same in a shell).
PYTHON ?= python3
VENV ?= .venv
# e.g. VENV_OPTIONS=--system-site-packages to reuse a cluster module's torch instead of downloading one
VENV_OPTIONS ?=
VENV_PYTHON := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
DEMO_DATA ?= data/generated
# The container test builds a 6 GB image from a locally made base (about 7 min the first time, 40 s
# after): `make test CIFAR_HPC_CONTAINER_TESTS=0` skips it.
CIFAR_HPC_CONTAINER_TESTS ?= 1

# Apptainer, as on a cluster (`module load apptainer`): APPTAINER names the command, else the one on PATH.
# Where the workplace's real Apptainer 1.4.5 exists (../shared/tools/apptainer, relocatable), `make test`
# installs what it needs (libsubid4, squashfs-tools) and uses it from a copy outside this clone
# (APPTAINER_HOME): the shared folder lacks the empty var/apptainer/mnt/session that Apptainer needs
# beside its binary, and stays untouched. The container tests skip Apptainer's, saying why, without one.
APPTAINER_SHARED := $(wildcard $(abspath ..)/shared/tools/apptainer/bin/apptainer)
APPTAINER_HOME ?= /var/tmp/cifar-hpc-ctr/apptainer-1.4.5
APPTAINER ?= $(if $(APPTAINER_SHARED),$(APPTAINER_HOME)/bin/apptainer,$(shell command -v apptainer 2>/dev/null))
export APPTAINER
# `make sif`: the .sif of IMAGE, built as containers/README.md says (podman save, apptainer build with the def)
SIF ?= /var/tmp/cifar-hpc-ctr/cifar-hpc.sif
SIF_IMAGE ?= localhost/cifar-hpc:pytest

# Besides the default Python, a fast subset runs under the oldest and newest Python the package claims
# (pyenv's, each in its own venv: .venv-py3.10, .venv-py3.13): every pure module, the CLI (train's error
# paths import torch and Lightning), the container commands, status, and one real training run. About
# 2 minutes each; the whole fast set (4-5 minutes each) would push CI past its 25-minute budget.
OTHER_PYTHONS ?= 3.10 3.13
PYTHONS_TESTS ?= tests/test_config_schedule.py tests/test_grid.py tests/test_profiles.py tests/test_cli_imports.py \
	tests/test_containers.py tests/test_status.py tests/test_bad_input.py tests/test_wandb_mode.py tests/test_significance.py \
	tests/test_train.py::test_device_loader_trains_end_to_end

.PHONY: install demo test lint system-packages apptainer-tool sif venvs-pythons test-pythons bench-tiny gpu-check

install: $(VENV)/.installed

# Reinstalled only when pyproject.toml changes (the package itself is editable: code changes need nothing).
$(VENV)/.installed: pyproject.toml
	@[ -x $(VENV_PYTHON) ] || $(PYTHON) -m venv $(VENV_OPTIONS) $(VENV)
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	@touch $@

# Trains ResNet-18 on CPU on a GENERATED learnable dataset in CIFAR-10's on-disk format
# (no GPU, no Slurm, no internet). The accuracy it prints is about that generated set.
# The recipe's peak LR (0.05) is for its batch of 256; a batch of 25 takes it scaled linearly
# (0.05 x 25/256 ~ 0.005). At 0.05 a batch of 12-50 makes the weights and activations grow faster
# than BatchNorm's running averages follow, so validation in eval mode scored 12% while the same
# weights scored 99% with re-estimated BatchNorm statistics. 40 steps, about 25 s on 2 idle cores.
DEMO_RUN ?= runs/demo
demo: install
	cifar-hpc data synth --dir $(DEMO_DATA) --train-per-batch 60 --test 200
	cifar-hpc train --data-dir $(DEMO_DATA) --epochs 4 --batch-size 25 --lr 0.005 --out $(DEMO_RUN)
	@echo "Where to look next (all about GENERATED data, not CIFAR-10):"
	@echo "  the command:        $(VENV)/bin/cifar-hpc (or: source $(VENV)/bin/activate, then cifar-hpc)"
	@echo "  result and config:  $(DEMO_RUN)/result.json, $(DEMO_RUN)/config.json"
	@echo "  metrics per epoch:  $(DEMO_RUN)/logs/metrics.csv"
	@echo "  W&B run (offline):  $$(ls -d $(DEMO_RUN)/wandb/offline-run-* 2>/dev/null | tail -1)  (upload from a machine with a network: wandb sync <that folder>)"
	@echo "  next, a study with a table and a plot: cifar-hpc submit --grid smoke --executor local --wait; cifar-hpc collect runs/smoke --plot runs/smoke/effects.png (cifar-hpc sync runs/smoke uploads its W&B runs)"

# Debian packages that some tests use (each such test skips, saying why, where its tool is absent, so a
# machine without root still runs the rest): pdflatex for the LaTeX table, chromium for the HTML
# report, squashfs-tools and libsubid4 for the workplace's Apptainer (../shared/tools/apptainer).
SYSTEM_PACKAGES ?= texlive-latex-base chromium squashfs-tools libsubid4
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "system packages: all present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  && echo "system packages: installed" $$missing; \
	else echo "system packages: not root or no apt-get, the tests that need them skip:" $$missing; fi

# Downloads overlap: the system packages install while the venv does, and the other Pythons' venvs
# (mostly torch, ~2-4 min each) while the suite runs; their tests (~1.5 min, mostly one core) run beside
# the tiny benchmarks (which record nothing, so sharing the cores changes no figure). Each phase prints
# its time, so that a slow CI run says where its minutes went.
test:
	@set -e; t0=$$(date +%s); log=$$(mktemp); \
	$(MAKE) --no-print-directory system-packages > $$log 2>&1 & apt=$$!; \
	$(MAKE) --no-print-directory install lint; \
	wait $$apt || { cat $$log; echo "system packages FAILED"; exit 1; }; cat $$log; rm -f $$log; \
	echo "== set-up and lint: $$(( $$(date +%s) - t0 )) s"; t0=$$(date +%s); \
	[ "$(CIFAR_HPC_CONTAINER_TESTS)" != 1 ] || $(MAKE) --no-print-directory apptainer-tool; \
	$(MAKE) --no-print-directory venvs-pythons > $(VENV)/venvs-pythons.log 2>&1 & venvs=$$!; \
	CIFAR_HPC_CONTAINER_TESTS=$(CIFAR_HPC_CONTAINER_TESTS) $(VENV_PYTHON) -m pytest; \
	echo "== suite: $$(( $$(date +%s) - t0 )) s"; t0=$$(date +%s); \
	wait $$venvs || { cat $(VENV)/venvs-pythons.log; echo "venvs for $(OTHER_PYTHONS) FAILED"; exit 1; }; \
	echo "== venvs for $(OTHER_PYTHONS): ready $$(( $$(date +%s) - t0 )) s after the suite"; t0=$$(date +%s); \
	$(MAKE) --no-print-directory test-pythons > $(VENV)/test-pythons.log 2>&1 & pythons=$$!; \
	$(MAKE) --no-print-directory bench-tiny; echo "== bench-tiny: $$(( $$(date +%s) - t0 )) s"; \
	wait $$pythons && ok=1 || ok=0; cat $(VENV)/test-pythons.log; [ $$ok = 1 ] || { echo "test-pythons FAILED"; exit 1; }; \
	echo "== test-pythons (beside bench-tiny): all done $$(( $$(date +%s) - t0 )) s after the venvs"

# The workplace's Apptainer made usable (see APPTAINER above); nothing to do without ../shared/tools/apptainer.
apptainer-tool:
ifneq ($(APPTAINER_SHARED),)
	@missing=$$(for p in libsubid4 squashfs-tools; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "apt-get install $$missing (for Apptainer)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing > /dev/null; fi
	@if [ ! -x $(APPTAINER_HOME)/bin/apptainer ]; then \
	  rm -rf $(APPTAINER_HOME).part && mkdir -p $(dir $(APPTAINER_HOME)) && \
	  cp -a $(dir $(APPTAINER_SHARED)).. $(APPTAINER_HOME).part && chmod -R u+w $(APPTAINER_HOME).part && \
	  mkdir -p $(APPTAINER_HOME).part/var/apptainer/mnt/session && mv $(APPTAINER_HOME).part $(APPTAINER_HOME); fi
	@$(APPTAINER) --version
endif

# The .sif as containers/README.md tells users to build it, from the container tests' image (built by
# `make test`); 4-6 min here (README: "Containers"), so not part of CI, which tests a sandbox folder.
# The build's own %test needs a capability root lacks here: --notest, then `apptainer test`.
sif: apptainer-tool
	@set -e; [ -n "$(APPTAINER)" ] || { echo "no apptainer: set APPTAINER or put it on PATH"; exit 1; }; \
	podman image inspect $(SIF_IMAGE) > /dev/null 2>&1 || { echo "no image $(SIF_IMAGE): make test builds it"; exit 1; }; \
	t0=$$(date +%s); mkdir -p $(dir $(SIF)); \
	podman save --format docker-archive -o $(SIF).tar $(SIF_IMAGE); t1=$$(date +%s); \
	APPTAINER_TMPDIR=$${APPTAINER_TMPDIR:-$(dir $(SIF))} $(APPTAINER) build --notest --force \
	  --build-arg BOOTSTRAP=docker-archive --build-arg IMAGE=$(SIF).tar $(SIF) containers/cifar-hpc.def; \
	t2=$$(date +%s); rm -f $(SIF).tar; $(APPTAINER) test $(SIF); t3=$$(date +%s); \
	echo "== $(SIF) ($$(du -h $(SIF) | cut -f1)): podman save $$((t1 - t0)) s, apptainer build $$((t2 - t1)) s, apptainer test $$((t3 - t2)) s"

lint: install
	$(VENV_PYTHON) -m ruff check .
	$(VENV_PYTHON) -m ruff format --check .

# PYTHONS_TESTS (without Slurm, slow training or containers) under each of OTHER_PYTHONS.
venvs-pythons:
	@set -e; for v in $(OTHER_PYTHONS); do \
	  py=$$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/$$v.* 2>/dev/null | sort -V | tail -1)/bin/python; \
	  [ -x "$$py" ] || { echo "Python $$v not found by pyenv"; exit 1; }; \
	  venv=.venv-py$$v; [ -x $$venv/bin/python ] || $$py -m venv $$venv; \
	  $$venv/bin/python -m pip install --quiet -e '.[test]'; \
	done

test-pythons: venvs-pythons
	@set -e; for v in $(OTHER_PYTHONS); do \
	  venv=.venv-py$$v; \
	  echo "== Python $$($$venv/bin/python -V | cut -d' ' -f2): $(words $(PYTHONS_TESTS)) test files"; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not slurm and not container" $(PYTHONS_TESTS); \
	done

# Benchmarks are not tests: CI only runs them once in a tiny mode so that they cannot rot.
# gpu_check's throughput and train stages are the throughput and time_to_accuracy runs just before
# it: CI runs its own stages only (env, pack, compile-modes eager only), about 1 minute;
# packing (Slurm) about 1 minute.
bench-tiny:
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for b in loaders collect report_size throughput time_to_accuracy cpu_ratios orchestration ddp_scaling packing \
	  "gpu_check --skip throughput-eager,train"; do \
	  start=$$(date +%s); \
	  $(VENV_PYTHON) -m bench.$$b --tiny > /dev/null 2> "$$log" || { cat "$$log"; echo "bench.$$b --tiny FAILED"; exit 1; }; \
	  echo "bench.$$b --tiny ok ($$(( $$(date +%s) - start )) s)"; \
	done

# On a machine with one GPU, under 8 minutes: throughput + MFU, the pipeline's time per epoch, packed vs
# separate runs, each stage under its own time cap (bench/gpu_check.py). Writes bench/results/gpu-check-<gpu>.json.
# It runs with PYTHON, not the venv: a GPU machine without a network cannot download one, and the check
# needs only what a cluster's PyTorch module has (torch, Lightning, typer, nvidia-ml-py; no submitit or wandb).
gpu-check:
	$(PYTHON) -m bench.gpu_check
