"""Fine-tuning with knowledge distillation, BN recalibration, evaluation, and the Evaluator."""

from autocompress.train.device import DeviceError, resolve_device
from autocompress.train.evaluator import EvalResult, Evaluator, FineTuneDiverged
from autocompress.train.loops import (
    FitConfig,
    distillation_loss,
    evaluate,
    fit,
    lr_at,
    num_steps,
    recalibrate_bn,
    resize_batch,
    train_base,
)

__all__ = [
    "DeviceError",
    "EvalResult",
    "Evaluator",
    "FineTuneDiverged",
    "FitConfig",
    "distillation_loss",
    "evaluate",
    "fit",
    "lr_at",
    "num_steps",
    "recalibrate_bn",
    "resize_batch",
    "resolve_device",
    "train_base",
]
