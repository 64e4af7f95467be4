"""``ImageData`` (uint8 splits in memory), seeded split carving and the batch loader.

Datasets here are small enough (CIFAR-10 is 184 MB as uint8) to live in memory as
tensors, which makes a loader little more than index arithmetic: no worker
processes, no per-sample Python, and exactly reproducible from a seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.data.augment import augment_batch
from autocompress.data.base import DataError, Split
from autocompress.data.sources import load_source

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for each purpose (keys), so streams never overlap."""
    ss = np.random.SeedSequence(seed % 2**64, spawn_key=keys)
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def channel_stats(
    x: torch.Tensor, chunk: int = 2048
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N x C x H x W images, in [0, 1] units.

    Chunked float32 batches with float64 sums keep memory flat and are the fastest
    exact-enough path on CPU; a constant channel gets std 1 so normalising never
    divides by zero.
    """
    c = x.shape[1]
    s, s2 = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].to(torch.float32)
        s += part.sum((0, 2, 3), dtype=torch.float64)
        s2 += part.square_().sum((0, 2, 3), dtype=torch.float64)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        return (0.0,) * c, (1.0,) * c
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 1e-8 * 255, std, torch.full_like(std, 255.0))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


class BatchLoader:
    """Re-iterable batches of ``(x float32 normalised N x C x H x W, y int64)``.

    Each ``iter()`` is a new epoch; its shuffle order and augmentation draws come
    from a generator seeded by ``(seed, epoch)``, so a run is reproducible and
    ``set_epoch`` resumes exactly. ``limit`` keeps a fixed, seeded subset (the same
    every epoch, so low-fidelity evaluations compare like with like). Works anywhere
    a ``torch.utils.data.DataLoader`` is used as a plain iterable.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        batch_size: int = 128,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        resolution: int | None = None,
        limit: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be a positive int or None, got {resolution}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.resolution, self.limit = seed, resolution, limit
        self.epoch = 0
        c = x.shape[1]
        self._shift = torch.tensor(mean, dtype=torch.float32).mul(255.0).view(1, c, 1, 1)
        self._scale = torch.tensor(std, dtype=torch.float32).mul(255.0).view(1, c, 1, 1)
        self._subset: torch.Tensor | None = None
        if limit is not None and limit < len(y):
            g = torch.Generator().manual_seed(derive_seed(seed, 1))
            self._subset = torch.randperm(len(y), generator=g)[:limit]

    @property
    def num_samples(self) -> int:
        """Samples per epoch (after ``limit``)."""
        return len(self.y) if self._subset is None else len(self._subset)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` epoch number ``epoch`` (e.g. when resuming)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(torch.Generator().manual_seed(derive_seed(self.seed, 0, epoch)))

    def _batches(self, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._subset
        if self.shuffle:
            perm = torch.randperm(self.num_samples, generator=g)
            order = perm if order is None else order[perm]
        for start in range(0, self.num_samples, self.batch_size):
            if order is None:
                xb, yb = (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size].clone(),
                )
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.augment:
                xb = augment_batch(xb, g)
            yield self._prepare(xb), yb

    def _prepare(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32, optional square resize, per-channel normalisation."""
        out = xb.to(torch.float32)
        r = self.resolution
        if r is not None and (r, r) != tuple(out.shape[-2:]):
            shrink = r < out.shape[-2] or r < out.shape[-1]
            out = F.interpolate(
                out, size=(r, r), mode="bilinear", align_corners=False, antialias=shrink
            )
        return out.sub_(self._shift).div_(self._scale)


@dataclass(repr=False)
class ImageData:
    """An image-classification dataset: uint8 N x C x H x W splits held in memory.

    ``mean``/``std`` are per channel in [0, 1] units, computed on the full train split
    (before ``max_train`` subsampling, so quick and full runs normalise identically).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.train_x.shape[1:])
        for split in SPLITS:
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
                raise DataError(
                    f"{self.name}: {split}_x must be uint8 N x {shape}, got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {split}_y must be int64 of length {x.shape[0]}, "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataError(
                    f"{self.name}: {split}_y has labels outside 0..{len(self.classes) - 1}"
                )
        if len(self.mean) != shape[0] or len(self.std) != shape[0]:
            raise DataError(f"{self.name}: mean/std need {shape[0]} channel values")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image at native resolution."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def loader(
        self,
        split: str,
        *,
        batch_size: int = 128,
        shuffle: bool | None = None,
        augment: bool | None = None,
        seed: int = 0,
        resolution: int | None = None,
        limit: int | None = None,
    ) -> BatchLoader:
        """Batches of one split; ``None`` means the default (shuffle and augment only for train)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        is_train = split == "train"
        return BatchLoader(
            getattr(self, f"{split}_x"),
            getattr(self, f"{split}_y"),
            mean=self.mean,
            std=self.std,
            batch_size=batch_size,
            shuffle=is_train if shuffle is None else shuffle,
            augment=is_train if augment is None else augment,
            seed=seed,
            resolution=resolution,
            limit=limit,
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, f'{s}_y'))}" for s in SPLITS)
        return f"ImageData({self.name!r}, {sizes}, input_shape={self.input_shape}, classes={self.num_classes})"


def _split(idx: np.ndarray, y: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (keep, out) with ``n_out`` held out, stratified by ``y`` when possible."""
    rng = np.random.default_rng(seed)
    if n_out <= 0:
        return rng.permutation(idx), idx[:0]
    from sklearn.model_selection import train_test_split

    rs = seed % 2**32
    try:
        keep, out = train_test_split(idx, test_size=n_out, stratify=y, random_state=rs)
    except ValueError as exc:  # too few samples per class to stratify
        logger.warning("stratified split impossible (%s); splitting at random", exc)
        keep, out = train_test_split(idx, test_size=n_out, random_state=rs)
    return keep, out


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def load_data(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Load a dataset by spec and carve the splits its source lacks, seeded and stratified.

    Fractions are of the pool a split is carved from: everything the source did not
    already assign to val/test (all 5,000 images for ``mnist5k``; the 50,000 train
    images for CIFAR-10, whose ``test`` split is given, so ``test_fraction`` is unused).
    ``max_train`` then subsamples the train split (seeded, stratified).
    """
    _fraction("val_fraction", val_fraction)
    _fraction("test_fraction", test_fraction)
    if max_train is not None and max_train < 1:
        raise ValueError(f"max_train must be >= 1 or None, got {max_train}")
    t0 = time.perf_counter()
    src = load_source(
        spec, cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else None
    )
    pool_x, pool_y = src.splits["train"]
    n = len(pool_y)
    n_test = 0 if "test" in src.splits else round(test_fraction * n)
    n_val = 0 if "val" in src.splits else round(val_fraction * n)
    if n - n_test - n_val < 1:
        raise DataError(
            f"{spec}: {n} images leave no training data with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}"
        )
    rest, test_idx = _split(np.arange(n), pool_y, n_test, derive_seed(seed, 2))
    train_idx, val_idx = _split(rest, pool_y[rest], n_val, derive_seed(seed, 3))
    splits: dict[str, Split] = {"train": (pool_x[train_idx], pool_y[train_idx])}
    for name, idx, key in (("val", val_idx, 4), ("test", test_idx, 5)):
        if name in src.splits:  # given by the source: keep all, but in seeded random order
            gx, gy = src.splits[name]
            order = np.random.default_rng(derive_seed(seed, key)).permutation(len(gy))
            splits[name] = (gx[order], gy[order])
        else:
            splits[name] = (pool_x[idx], pool_y[idx])
    tensors = {
        s: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))
        for s, (x, y) in splits.items()
    }
    mean, std = channel_stats(tensors["train"][0])
    tx, ty = tensors["train"]
    if max_train is not None and max_train < len(ty):
        keep, _ = _split(np.arange(len(ty)), ty.numpy(), len(ty) - max_train, derive_seed(seed, 6))
        keep_t = torch.from_numpy(np.sort(keep))
        tensors["train"] = (tx.index_select(0, keep_t), ty.index_select(0, keep_t))
    data = ImageData(
        src.name,
        *tensors["train"],
        *tensors["val"],
        *tensors["test"],
        classes=list(src.classes),
        mean=mean,
        std=std,
    )
    logger.info("loaded %r in %.1f s: %r", spec, time.perf_counter() - t0, data)
    return data
