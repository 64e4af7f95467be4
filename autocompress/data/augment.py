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


def crop_and_flip(
    x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to H x W at a random offset per sample and, if
    ``flip``, mirror a random half of the samples: one ``gather`` for both (about 5x
    faster than advanced indexing on CPU)."""
    n, c, h, w = x.shape
    if n == 0 or (padding <= 0 and not flip):
        return x
    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    width = w + 2 * padding
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    rows = offsets[0, :, None] + torch.arange(h)  # n x h
    cols = offsets[1, :, None] + torch.arange(w)  # n x w
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat.to(x.device)).view(n, c, h, w)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad N x C x H x W by ``padding`` and crop back to H x W at a random offset per sample."""
    return crop_and_flip(x, padding, False, generator)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half (each sample with probability 1/2) of the batch left-right."""
    return crop_and_flip(x, 0, True, generator)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, policy: AugmentPolicy | None = None
) -> torch.Tensor:
    """Apply ``policy`` (default: :func:`policy_for` the batch's shape) to an N x C x H x W batch."""
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects N x C x H x W, got shape {tuple(x.shape)}")
    policy = policy or policy_for(*x.shape[1:])
    return crop_and_flip(x, policy.padding, policy.flip, generator)
