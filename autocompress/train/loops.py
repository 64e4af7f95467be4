"""Training loops: fine-tuning with knowledge distillation, BN recalibration, evaluation.

Everything here works on any ``nn.Module`` and any re-iterable of ``(x, y)``
batches (an ``ImageData`` loader or a ``torch.utils.data.DataLoader``). Each
function runs on its ``device`` (``cpu``, ``cuda``, ``cuda:N``) and leaves every
module on the device it came on, so a model from the CPU comes back on the CPU,
ready to be measured, exported or saved. A
compressed candidate is scored by :class:`autocompress.train.Evaluator`, which
chains :func:`recalibrate_bn`, :func:`fit` (with the uncompressed model as the
teacher) and :func:`evaluate`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.compress.quantization import ActFakeQuant
from autocompress.progress import progress_bar
from autocompress.train.device import on_device, resolve_device

if TYPE_CHECKING:  # imports flow one way: train does not need data at import time
    from autocompress.data import ImageData

__all__ = [
    "SCHEDULES",
    "FitConfig",
    "distillation_loss",
    "evaluate",
    "fit",
    "lr_at",
    "num_steps",
    "recalibrate_bn",
    "resize_batch",
    "train_base",
]

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "constant")
_POSTFIX_EVERY = 10  # steps between progress-bar updates (each one syncs the device)

Batches = Iterable[tuple[Tensor, Tensor]]


# -- evaluation --------------------------------------------------------------------------------

def resize_batch(x: Tensor, resolution: int | None) -> Tensor:
    """Resize an N x C x H x W batch to ``resolution`` x ``resolution`` (no-op when it already is).

    Bilinear, antialiased when shrinking, like the data loaders; normalisation is
    affine per channel, so resizing a normalised batch equals normalising a resized one.
    """
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    shrink = resolution < x.shape[-2] or resolution < x.shape[-1]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=shrink)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, *, device: str | torch.device = "cpu",
             max_batches: int | None = None, resolution: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``loader`` (eval mode, no grad; mode and device restored).

    ``max_batches`` stops early; ``resolution`` resizes each batch for the model
    (leave it None when the loader already yields the right size).
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    try:
        with on_device(model, device):
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x = resize_batch(x.to(device, non_blocking=True), resolution)
                y = y.to(device, non_blocking=True)
                correct += (model(x).argmax(dim=1) == y).sum()
                total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate(): the loader yielded no samples")
    return int(correct) / total


# -- batch-norm recalibration ------------------------------------------------------------------

@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Batches, *, num_batches: int = 20,
                   device: str | torch.device = "cpu") -> None:
    """Re-estimate BatchNorm running statistics (and calibrate fake-quant observers) from data.

    Every BatchNorm's running mean/var is reset and re-accumulated as a cumulative
    average (``momentum=None``) over up to ``num_batches`` batches. Only the
    BatchNorm layers and the activation observers (:class:`ActFakeQuant`, which
    record their range in train mode) are switched to train mode; everything else
    (dropout, drop-path) stays in eval mode so the statistics match inference.
    Each module's momentum, train/eval mode and device are restored afterwards.
    """
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0, got {num_batches}")
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    observers = [m for m in model.modules() if isinstance(m, ActFakeQuant)]
    if num_batches == 0 or not (bns or observers):
        return
    device = resolve_device(device)
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    seen = 0
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for obs in observers:
            obs.train()
        with on_device(model, device):
            for x, _ in loader:
                if seen >= num_batches:
                    break
                model(x.to(device, non_blocking=True))
                seen += 1
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    if seen == 0:
        raise ValueError("recalibrate_bn(): the loader yielded no batches")
    if seen < num_batches:
        logger.debug("recalibrate_bn: loader ran out after %d of %d batches", seen, num_batches)


# -- knowledge distillation ----------------------------------------------------------------------

def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, *,
                      temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Hinton et al. (2015) knowledge-distillation loss, averaged over the batch.

    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)``.
    The ``T**2`` keeps the soft term's gradient scale independent of ``T``. The
    teacher's logits are treated as constants. ``targets`` may be None only when
    ``alpha == 1``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    loss = student_logits.new_zeros(())
    if alpha > 0:
        t = temperature
        kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                      reduction="batchmean", log_target=True)
        loss = loss + alpha * t * t * kl
    if alpha < 1:
        if targets is None:
            raise ValueError("distillation_loss(): targets are needed when alpha < 1")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


# -- fine-tuning ---------------------------------------------------------------------------------

@dataclass
class FitConfig:
    """How :func:`fit` trains: plain and JSON-serializable (``dataclasses.asdict``)."""

    epochs: float = 1.0  # passes over the loader, fractional allowed; -> ceil(epochs * len(loader)) steps
    max_steps: int | None = None  # cap on the number of steps
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4  # applied to weights only, not to biases and norm parameters
    nesterov: bool = True
    schedule: str = "cosine"  # "cosine" (per-step decay to 0 after warmup) or "constant"
    warmup_steps: int = 0  # linear warmup from lr / warmup_steps to lr
    temperature: float = 4.0  # distillation temperature (used only with a teacher)
    alpha: float = 0.9  # weight of the distillation term (used only with a teacher)
    channels_last: bool = True
    seed: int = 0
    progress: bool = True  # loss, accuracy so far and steps/s: a live bar on a terminal, else log lines

    #: fields held as floats whatever number was given: 2 and 2.0 epochs are one config, and one cache key
    FLOATS: ClassVar[tuple[str, ...]] = ("epochs", "lr", "momentum", "weight_decay", "temperature", "alpha")

    def __post_init__(self) -> None:
        for name in self.FLOATS:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        checks = [
            ("epochs", self.epochs >= 0 and math.isfinite(self.epochs), "a finite number >= 0"),
            ("max_steps", self.max_steps is None or self.max_steps >= 0, "an int >= 0 or None"),
            ("lr", self.lr >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("temperature", self.temperature > 0, "> 0"),
            ("alpha", 0 <= self.alpha <= 1, "in [0, 1]"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"FitConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def num_steps(config: FitConfig, batches_per_epoch: int) -> int:
    """Optimizer steps :func:`fit` takes for a loader of ``batches_per_epoch`` batches."""
    steps = math.ceil(config.epochs * batches_per_epoch - 1e-9) if config.epochs > 0 else 0
    return steps if config.max_steps is None else min(steps, config.max_steps)


def lr_at(step: int, total_steps: int, config: FitConfig) -> float:
    """Learning rate of (0-based) ``step``: linear warmup, then constant or per-step cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _epochs(loader: Batches) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of ``loader`` pass after pass; loaders with ``set_epoch`` start at epoch 0, so a
    fit is a function of the loader's seed, not of how often it was iterated before."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("fit(): the training loader yielded no batches")
        epoch += 1


def fit(model: nn.Module, train_loader: Batches, config: FitConfig, *, teacher: nn.Module | None = None,
        val_loader: Batches | None = None, device: str | torch.device = "cpu", desc: str = "fine-tune",
        student_resolution: int | None = None) -> dict[str, Any]:
    """Train ``model`` in place with SGD; distill from ``teacher`` when one is given.

    Without a teacher the loss is cross-entropy; with one it is
    :func:`distillation_loss` (teacher in eval mode, no grad, seeing the batch at the
    loader's resolution while the student sees it resized to ``student_resolution``).
    Seeded: ``torch.manual_seed(config.seed)`` inside a forked RNG state (the
    caller's global RNG is left as it was) and the data order comes from the
    loader's own seed. Student and teacher train on ``device`` and are left in the
    mode and on the device they came in (the student keeps ``channels_last``).

    Returns the history: ``steps``, ``epochs`` (passes over the data), ``train_loss``
    and ``train_accuracy`` (over the last pass, or the steps taken in it),
    ``seconds``, ``steps_per_second``, ``diverged`` (a non-finite loss stopped
    training) and ``val_accuracy`` when ``val_loader`` is given.
    """
    device = resolve_device(device)
    try:
        batches_per_epoch = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("fit(): train_loader must have a length (batches per epoch) to turn "
                        "FitConfig.epochs into steps") from None
    total = num_steps(config, batches_per_epoch)
    memory_format = torch.channels_last if config.channels_last else None
    teacher_mode = None if teacher is None else teacher.training
    was_training = model.training
    history: dict[str, Any] = {"steps": 0, "epochs": 0.0, "train_loss": None, "train_accuracy": None,
                               "seconds": 0.0, "steps_per_second": 0.0, "diverged": False}
    t0 = time.perf_counter()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with ExitStack() as placed:  # student and teacher go back to their own devices on the way out
            for module in (model, teacher):
                if module is not None:
                    placed.enter_context(on_device(module, device))
                    module.to(memory_format=memory_format or torch.preserve_format)
            if teacher is not None:
                teacher.eval()
            with torch.random.fork_rng(devices=fork_devices, device_type=device.type if fork_devices else "cuda"):
                torch.manual_seed(config.seed)
                if total > 0:
                    _train(model, train_loader, config, total, batches_per_epoch, teacher, device, desc,
                           student_resolution, memory_format, history)
            history["seconds"] = time.perf_counter() - t0
            if val_loader is not None:
                history["val_accuracy"] = evaluate(model, val_loader, device=device, resolution=student_resolution)
    finally:
        model.train(was_training)
        if teacher is not None and teacher_mode is not None:
            teacher.train(teacher_mode)
    history["steps_per_second"] = history["steps"] / history["seconds"] if history["steps"] else 0.0
    logger.info("%s: %d steps in %.1f s, train loss %s%s", desc, history["steps"], history["seconds"],
                "n/a" if history["train_loss"] is None else f"{history['train_loss']:.4f}",
                f", val accuracy {history['val_accuracy']:.4f}" if "val_accuracy" in history else "")
    return history


def _train(model: nn.Module, loader: Batches, config: FitConfig, total: int, batches_per_epoch: int,
           teacher: nn.Module | None, device: torch.device, desc: str, student_resolution: int | None,
           memory_format: torch.memory_format | None, history: dict[str, Any]) -> None:
    optimizer = torch.optim.SGD(_param_groups(model, config.weight_decay), lr=lr_at(0, total, config),
                                momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    model.train()
    # running sums over the current pass, kept on the device to avoid a sync per step
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = steps_in_pass = 0
    bar = progress_bar(total=total, desc=desc, unit="step", enabled=config.progress, leave=False)
    try:
        for step, (x, y) in enumerate(_epochs(loader)):
            if step >= total:
                break
            if step and step % batches_per_epoch == 0:  # a new pass: restart the running figures
                loss_sum.zero_()
                correct.zero_()
                seen = steps_in_pass = 0
            lr = lr_at(step, total, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = x.to(device, non_blocking=True)
            if memory_format is not None and x.ndim == 4:
                x = x.contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            x_student = resize_batch(x, student_resolution)
            logits = model(x_student)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = distillation_loss(logits, teacher_logits, y, temperature=config.temperature,
                                         alpha=config.alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.numel()
            steps_in_pass += 1
            history["steps"] = step + 1
            bar.update(1)
            last = step + 1 == total
            if last or (step + 1) % _POSTFIX_EVERY == 0:
                mean_loss = float(loss_sum) / seen
                history["train_loss"] = mean_loss
                history["train_accuracy"] = int(correct) / seen
                if config.progress:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{history['train_accuracy']:.3f}",
                                    lr=f"{lr:.4g}", refresh=False)
                if not math.isfinite(mean_loss):
                    history["diverged"] = True
                    logger.warning("%s: loss became %s at step %d of %d; stopping", desc, mean_loss, step + 1, total)
                    break
    finally:
        bar.close()
    history["epochs"] = history["steps"] / batches_per_epoch


def train_base(model: nn.Module, data: ImageData, config: FitConfig, *, device: str | torch.device = "cpu",
               batch_size: int = 128) -> dict[str, Any]:
    """Train the uncompressed model with plain cross-entropy on ``data``'s train split.

    The train loader shuffles and augments, seeded by ``config.seed``. Training and
    evaluation run on ``device``; the model is handed back where it came from (the
    CPU, for a freshly built one). Returns the :func:`fit` history plus
    ``val_accuracy`` and ``test_accuracy``.
    """
    device = resolve_device(device)
    train = data.loader("train", batch_size=batch_size, shuffle=True, augment=True, seed=config.seed)
    with on_device(model, device):  # one round trip for training and both evaluations
        history = fit(model, train, config, device=device, desc=f"train {data.name}")
        history["val_accuracy"] = evaluate(model, data.loader("val", batch_size=max(batch_size, 256)), device=device)
        history["test_accuracy"] = evaluate(model, data.loader("test", batch_size=max(batch_size, 256)),
                                            device=device)
    logger.info("trained on %s: val accuracy %.4f, test accuracy %.4f", data.name,
                history["val_accuracy"], history["test_accuracy"])
    return history
