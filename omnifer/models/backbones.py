"""Backbone registry: image encoders that map ``[B, 3, H, W]`` images to ``[B, D]`` features.

A factory is registered by name with :func:`register_backbone` and called as
``fn(*, input_size=...)``; it returns the module and its feature dimension ``D``. torchvision
loads inside the factories that need it, and always without pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from omnifer.registry import Registry

BackboneFactory = Callable[..., "tuple[nn.Module, int]"]

#: Registered backbone factories by name.
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``fn(*, input_size) -> (module, feature_dim)`` under ``name``."""
    return BACKBONES.register(name)


def check_backbone_name(name: str) -> str:
    """Return ``name`` if it is registered, else raise an error listing the valid names."""
    return BACKBONES.check(name)


def build_backbone(name: str, *, input_size: int = 112) -> tuple[nn.Module, int]:
    """Build the backbone ``name`` for square images of ``input_size`` pixels."""
    module, dim = BACKBONES.get(name)(input_size=int(input_size))
    return module, int(dim)


# ---------------------------------------------------------------- registered backbones

def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


@register_backbone("convnet")
def convnet(*, input_size: int = 112) -> tuple[nn.Module, int]:
    """A small, fast CNN (about 0.4 M parameters) for tests and distillation; 32..224 px."""
    layers = [
        *_conv_bn_relu(3, 32, stride=2),
        *_conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 128),
        nn.MaxPool2d(2),
        *_conv_bn_relu(128, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers), 256


def _resnet(name: str) -> tuple[nn.Module, int]:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, dim


def _mobilenet(name: str) -> tuple[nn.Module, int]:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    # features -> avgpool -> flatten; the classifier MLP is dropped.
    dim = model.classifier[0].in_features
    model.classifier = nn.Identity()
    return model, dim


for _name, _build in (("resnet18", _resnet), ("resnet50", _resnet),
                      ("mobilenet_v3_small", _mobilenet), ("mobilenet_v3_large", _mobilenet)):
    register_backbone(_name)(lambda *, input_size=112, n=_name, b=_build: b(n))
