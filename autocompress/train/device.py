"""Where training and evaluation run: parsing ``--device`` and moving modules there and back.

Only training and accuracy run on the device: latency is priced for the
profile's target and everything that is measured, counted, materialized,
exported or saved works on the CPU. So whatever trains on a GPU is handed back
on the CPU, and a device that cannot run fails up front.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain

import torch
from torch import nn

__all__ = ["DEVICE_TYPES", "DeviceError", "module_device", "on_device", "resolve_device"]

DEVICE_TYPES = ("cpu", "cuda")


class DeviceError(ValueError):
    """A device string that does not parse, names an unsupported type, or is not available here."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that can run here (``cpu``, ``cuda`` or ``cuda:N``); errors name the field.

    The result compares equal to the device of a tensor that lives there: ``cpu:0``
    becomes ``cpu`` and a bare ``cuda`` the current CUDA device's index.
    """
    if not isinstance(device, str | torch.device):  # an int would parse as a CUDA index
        raise DeviceError(f"device: {device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device: {device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type not in DEVICE_TYPES or (parsed.type == "cpu" and parsed.index not in (None, 0)):
        raise DeviceError(f"device: {device!r} is not supported; expected 'cpu', 'cuda' or 'cuda:N'")
    if parsed.type == "cpu":
        return torch.device("cpu")  # what a CPU tensor reports, so the two compare equal
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {device!r} is not available (torch.cuda.is_available() is False: no CUDA "
                              f"GPU or a CPU-only PyTorch build); use 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device: {device!r} is not available: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
        if parsed.index is None:
            parsed = torch.device("cuda", torch.cuda.current_device())
    return parsed


def module_device(module: nn.Module) -> torch.device | None:
    """The device of ``module``'s first parameter or buffer (None when it has neither)."""
    first = next(chain(module.parameters(), module.buffers()), None)
    return None if first is None else first.device


@contextmanager
def on_device(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Run ``module`` on ``device`` for the block, then move it back where it came from (memory format kept).

    The training loops use it so that a module leaves them on the device it came
    on: a model from the CPU is handed back on the CPU however it was trained.
    """
    home = module_device(module)
    module.to(device)
    try:
        yield module
    finally:
        if home is not None:
            module.to(home)
