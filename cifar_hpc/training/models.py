"""torchvision ResNet-18/34 with the CIFAR stem.

ImageNet's stem (7×7 stride-2 conv, then a max-pool) shrinks a 32×32 image to 8×8 before the first
residual block; CIFAR networks instead keep full resolution with one 3×3 stride-1 conv and no pool.
The model knows nothing about devices or parallelism.
"""

from torch import nn
from torchvision import models as tv_models

_BUILDERS = {"resnet18": tv_models.resnet18, "resnet34": tv_models.resnet34}


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised ResNet (no pretrained weights: nothing is downloaded)."""
    model = _BUILDERS[name](weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def forward_flops(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates ×2 of one image's forward pass, counted by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
    model.train(was_training)
    return counter.get_total_flops()
