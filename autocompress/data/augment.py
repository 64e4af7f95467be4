"""Batch augmentation: vectorized, seeded by a caller-owned ``torch.Generator``.

The policy is chosen by channel count, because the two kinds of data we ship need
different things:

* **colour (C >= 2)**, e.g. CIFAR-10: the standard random crop with zero padding of
  1/8 of the side (4 px at 32x32) plus a random horizontal flip.
* **grayscale (C == 1)**, e.g. MNIST digits: a random crop with padding of 1/14 of
  the side (2 px at 28x28, 1 px at 8x8) and *no* flip, since a mirrored digit is a
  different (or no) digit.

Everything runs on the whole batch at once (no per-sample Python loop), on uint8
or float tensors alike, so it is cheap next to a forward pass. Padding is zero in
the tensor's own units; the loader augments raw uint8 pixels, so padding is black.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentPolicy:
    """How to augment one kind of image: crop padding in pixels and whether to flip."""

    padding: int
    flip: bool


def policy_for(channels: int, height: int, width: int) -> AugmentPolicy:
    """Pick the augmentation for an image shape (see the module docstring for why)."""
    side = min(height, width)
    if channels == 1:
        return AugmentPolicy(padding=max(1, round(side / 14)), flip=False)
    return AugmentPolicy(padding=max(1, round(side / 8)), flip=True)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad N x C x H x W by ``padding`` and crop back to H x W at a random offset per sample."""
    if padding <= 0 or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # n x h
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # n x w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``."""
    if x.shape[0] == 0:
        return x
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, policy: AugmentPolicy | None = None
) -> torch.Tensor:
    """Apply ``policy`` (default: :func:`policy_for` the batch's shape) to an N x C x H x W batch."""
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects N x C x H x W, got shape {tuple(x.shape)}")
    policy = policy or policy_for(*x.shape[1:])
    x = random_crop(x, policy.padding, generator)
    return random_hflip(x, generator) if policy.flip else x
