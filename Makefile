# The two commands a newcomer needs; each does its own set-up.
PYTHON ?= python3
DEMO_DATA ?= data/generated
# The container test builds a 6 GB image from a locally made base (about 7 min the first time, 40 s
# after): `make test CIFAR_HPC_CONTAINER_TESTS=0` skips it.
CIFAR_HPC_CONTAINER_TESTS ?= 1

.PHONY: install demo test bench-tiny gpu-check

install:
	$(PYTHON) -m pip install --quiet -e '.[test]'

# Trains ResNet-18 on CPU on a GENERATED learnable dataset in CIFAR-10's on-disk format
# (no GPU, no Slurm, no internet). The accuracy it prints is about that generated set.
demo: install
	cifar-hpc data synth --dir $(DEMO_DATA) --train-per-batch 100 --test 200
	cifar-hpc train --data-dir $(DEMO_DATA) --epochs 3 --batch-size 50 --out runs/demo

test: install
	CIFAR_HPC_CONTAINER_TESTS=$(CIFAR_HPC_CONTAINER_TESTS) $(PYTHON) -m pytest
	$(MAKE) bench-tiny

# Benchmarks are not tests: CI only runs them once in a tiny mode so that they cannot rot.
bench-tiny:
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for b in loaders collect throughput time_to_accuracy cpu_ratios orchestration ddp_scaling; do \
	  start=$$(date +%s); \
	  $(PYTHON) -m bench.$$b --tiny > /dev/null 2> "$$log" || { cat "$$log"; echo "bench.$$b --tiny FAILED"; exit 1; }; \
	  echo "bench.$$b --tiny ok ($$(( $$(date +%s) - start )) s)"; \
	done

# On a machine with one GPU, about 7 minutes: throughput + MFU and the pipeline's time per epoch,
# each stage under its own time cap (bench/gpu_check.py). Writes bench/results/gpu-check-<gpu>.json.
gpu-check:
	$(PYTHON) -m bench.gpu_check
