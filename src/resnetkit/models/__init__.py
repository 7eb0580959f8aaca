"""Model families; importing this package registers every model."""
from . import resnet  # noqa: F401
from . import d2l  # noqa: F401
from . import cifar, ghostnet, mobilenetv2, res2net, resnest  # noqa: F401
from .base import ResidualNet
from .resnet import ResNet

__all__ = ["ResidualNet", "ResNet"]
