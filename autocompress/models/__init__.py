"""Model registry and zoo.

``create_model(name, **kwargs)`` builds a registered model (see
``list_models()``) or any ``"package.module:callable"``; ``model_info(name)``
says which search-space family a model belongs to.
"""

from . import efficientnet, lenet, mobilenetv2, proxyless, resnet_cifar  # noqa: F401  (register the zoo)
from .registry import (
    GENERIC_FAMILY,
    ModelError,
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "GENERIC_FAMILY",
    "ModelError",
    "ModelInfo",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
