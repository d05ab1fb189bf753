"""cifar-hpc: which training tricks help ResNet-18/34 on CIFAR-10, and what do they cost."""

__version__ = "0.1.0"
