"""The Evaluator: accuracy of a materialized candidate.

BN recalibration, a short fine-tune with knowledge distillation from the
uncompressed teacher, then top-1 accuracy on a held-out split. Callers build
one Evaluator per fidelity ("proxy": a few steps on a subset; "full": longer).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autocompress.train.device import module_device, on_device, resolve_device
from autocompress.train.loops import FitConfig, evaluate, fit, num_steps, recalibrate_bn

if TYPE_CHECKING:
    from autocompress.data import ImageData

__all__ = ["EvalResult", "Evaluator"]

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("train", "val", "test")


class FineTuneDiverged(ArithmeticError):
    """A candidate's fine-tune whose loss stopped being a number: it has no accuracy to report."""


@dataclass
class EvalResult:
    """What one evaluation measured (JSON-serializable through :meth:`to_dict`)."""

    accuracy: float  # top-1 in [0, 1]
    split: str
    fine_tune_steps: int
    seconds: float
    fidelity: str  # "proxy" | "full", as the caller named the Evaluator
    train_loss: float | None = None  # final fine-tune loss, None without fine-tuning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluator:
    """Accuracy of a materialized candidate: BN recalibration, short KD fine-tune from the
    uncompressed teacher, accuracy.

    The candidate model is recalibrated and fine-tuned **in place** (materialize
    already hands over a fresh copy). Each call builds fresh, seeded loaders, so the
    same model and ``fit.seed`` give the same accuracy however often it is called.

    ``train_limit`` / ``eval_limit`` keep a fixed, seeded subset of the train / eval
    split (the same for every candidate, so proxy scores compare like with like).

    ``device`` (``cpu``, ``cuda``, ``cuda:N``) is where recalibration, fine-tuning and
    evaluation run. The candidate is handed back on the device it came on (the CPU,
    from materialize), so it can be counted, exported and saved; a teacher living
    elsewhere is copied to the device once and left where it is.
    """

    def __init__(self, *, teacher: nn.Module, data: ImageData, fit: FitConfig, recalibrate_batches: int = 20,
                 eval_split: str = "val", eval_limit: int | None = None, train_limit: int | None = None,
                 batch_size: int = 128, device: str | torch.device = "cpu", fidelity: str = "proxy") -> None:
        if not isinstance(fit, FitConfig):
            raise TypeError(f"fit must be a FitConfig, got {type(fit).__name__}")
        if recalibrate_batches < 0:
            raise ValueError(f"recalibrate_batches must be >= 0, got {recalibrate_batches}")
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {eval_split!r}")
        for name, value in (("eval_limit", eval_limit), ("train_limit", train_limit)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(fidelity, str) or not fidelity:
            raise ValueError(f"fidelity must be a non-empty string such as 'proxy' or 'full', got {fidelity!r}")
        self.teacher = teacher
        self.data = data
        self.fit = fit
        self.recalibrate_batches = recalibrate_batches
        self.eval_split = eval_split
        self.eval_limit = eval_limit
        self.train_limit = train_limit
        self.batch_size = batch_size
        self.device = resolve_device(device)  # a bad or missing device fails here, not at the first candidate
        self.fidelity = fidelity
        self._device_teacher: nn.Module | None = None  # the teacher's copy on the device, made on first use

    def get_params(self) -> dict[str, Any]:
        """The scalar settings (teacher and data aside) that rebuild this Evaluator."""
        return {"fit": self.fit.to_dict(), "recalibrate_batches": self.recalibrate_batches,
                "eval_split": self.eval_split, "eval_limit": self.eval_limit, "train_limit": self.train_limit,
                "batch_size": self.batch_size, "device": str(self.device), "fidelity": self.fidelity}

    def fine_tune_steps(self) -> int:
        """Steps each call fine-tunes for."""
        return num_steps(self.fit, len(self._train_loader(augment=True, resolution=None)))

    def _train_loader(self, *, augment: bool, resolution: int | None):
        return self.data.loader("train", batch_size=self.batch_size, shuffle=True, augment=augment,
                                seed=self.fit.seed, resolution=resolution, limit=self.train_limit)

    def _native_resolution(self, resolution: int | None) -> int | None:
        """None when ``resolution`` is the data's own size (nothing to resize)."""
        if resolution is None:
            return None
        if resolution < 1:
            raise ValueError(f"resolution must be a positive int or None, got {resolution}")
        _, h, w = self.data.input_shape
        return None if (h, w) == (resolution, resolution) else int(resolution)

    def __call__(self, model: nn.Module, *, resolution: int | None = None) -> EvalResult:
        """Recalibrate BN, distill from the teacher for ``fit`` steps, and measure accuracy.

        ``resolution`` (compound scaling) is the square input size the candidate
        runs at; the teacher always sees the data's native resolution.
        """
        t0 = time.perf_counter()
        resolution = self._native_resolution(resolution)
        device = self.device
        with on_device(model, device):  # one round trip for recalibration, fine-tuning and evaluation
            if self.recalibrate_batches > 0:
                recal = self._train_loader(augment=False, resolution=resolution)
                recalibrate_bn(model, recal, num_batches=self.recalibrate_batches, device=device)
            train_loader = self._train_loader(augment=True, resolution=None)
            steps, train_loss = 0, None
            if num_steps(self.fit, len(train_loader)) > 0:
                history = fit(model, train_loader, self.fit, teacher=self._teacher_on(device), device=device,
                              desc=f"fine-tune ({self.fidelity})", student_resolution=resolution)
                steps, train_loss = history["steps"], history["train_loss"]
                if history["diverged"]:
                    raise FineTuneDiverged(f"the {self.fidelity} fine-tune's loss became {train_loss} at step "
                                           f"{steps}")
            eval_loader = self.data.loader(self.eval_split, batch_size=max(self.batch_size, 256), shuffle=False,
                                           augment=False, seed=self.fit.seed, resolution=resolution,
                                           limit=self.eval_limit)
            accuracy = evaluate(model, eval_loader, device=device)
        # fit() leaves the student channels_last; hand it back in the default layout, the one a rebuilt model
        # runs in (fake-quantized activations can round differently across layouts)
        model.to(memory_format=torch.contiguous_format)
        result = EvalResult(accuracy=accuracy, split=self.eval_split, fine_tune_steps=steps,
                            seconds=time.perf_counter() - t0, fidelity=self.fidelity, train_loss=train_loss)
        logger.info("evaluated (%s): accuracy %.4f on %s after %d fine-tune steps in %.1f s", self.fidelity,
                    accuracy, self.eval_split, steps, result.seconds)
        return result

    def _teacher_on(self, device: torch.device) -> nn.Module:
        """The teacher on ``device``: itself where it lives there (or has no weights), else one copy kept for
        every call, so the caller's reference model never leaves its device and is not moved once per trial."""
        if module_device(self.teacher) in (None, device):
            return self.teacher
        if self._device_teacher is None or module_device(self._device_teacher) != device:
            self._device_teacher = copy.deepcopy(self.teacher).to(device)
        return self._device_teacher

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "fit")
        return f"Evaluator({params})"
