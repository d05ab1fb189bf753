# The two commands a newcomer needs; each does its own set-up.
PYTHON ?= python3
DEMO_DATA ?= data/generated

.PHONY: install demo test bench-tiny

install:
	$(PYTHON) -m pip install --quiet -e '.[test]'

# Trains ResNet-18 on CPU on a GENERATED learnable dataset in CIFAR-10's on-disk format
# (no GPU, no Slurm, no internet). The accuracy it prints is about that generated set.
demo: install
	cifar-hpc data synth --dir $(DEMO_DATA) --train-per-batch 100 --test 200
	cifar-hpc train --data-dir $(DEMO_DATA) --epochs 3 --batch-size 50 --out runs/demo

test: install
	$(PYTHON) -m pytest
	$(MAKE) bench-tiny

# Benchmarks are not tests: CI only runs them once in a tiny mode so that they cannot rot.
bench-tiny:
	$(PYTHON) -m bench.loaders --tiny > /dev/null
