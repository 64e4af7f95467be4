"""How to feed an exported model: the data pipeline's preprocessing, written down as a record.

The model was trained and scored on batches from
:class:`~autocompress.data.BatchLoader`: uint8 pixels -> float32, a square
bilinear resize to the candidate's resolution (antialiased when shrinking,
``align_corners=False``) on the 0..255 values, then per-channel normalization
with the train split's mean and std (in [0, 1] units). :func:`preprocessing`
describes exactly that, so a deployer can reproduce the input from a raw image;
the exporter stores it in the manifest and in every ONNX file's metadata. The
tests check the record against the loader, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from autocompress.export.manifest import Preprocessing, Resize

#: what the pipeline's resize is (autocompress.data.dataset.BatchLoader._prepare)
RESIZE_MODE = "bilinear"
RESIZE_ALIGN_CORNERS = False


def _raw(channels: int, data_spec: str) -> str:
    if channels == 1:
        order = "one grey channel"
    elif data_spec.startswith("npz:"):
        order = f"{channels} channels in the npz file's order"
    else:
        order = f"{channels} channels, RGB" if channels == 3 else f"{channels} channels"
    return f"uint8 pixels 0..255, C x H x W, {order}"


def preprocessing(*, raw_shape: Sequence[int], input_shape: Sequence[int], mean: Sequence[float],
                  std: Sequence[float], input_name: str, data_spec: str = "") -> Preprocessing:
    """The record for a model taking ``input_shape`` (C, h, w) that was fed raw ``raw_shape`` (C, H, W) images.

    ``mean``/``std``: per channel in [0, 1] units (``ImageData.mean``/``std``);
    ``input_name``: the ONNX file's input; ``data_spec``: the data source (it
    says what channel order a raw image has).
    """
    c, h0, w0 = (int(v) for v in raw_shape)
    c_in, h, w = (int(v) for v in input_shape)
    if c_in != c:
        raise ValueError(f"input_shape {list(input_shape)} and raw_shape {list(raw_shape)} differ in channels")
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need {c} channel values, got {len(mean)} and {len(std)}")
    resize = None
    steps = ["x = the raw image as float32 (0..255)"]
    if (h, w) != (h0, w0):
        shrink = h < h0 or w < w0
        resize = Resize(from_hw=[h0, w0], to_hw=[h, w], mode=RESIZE_MODE, align_corners=RESIZE_ALIGN_CORNERS,
                        antialias=shrink)
        steps.append(f"x = torch.nn.functional.interpolate(x[None], size=({h}, {w}), mode={RESIZE_MODE!r}, "
                     f"align_corners={RESIZE_ALIGN_CORNERS}, antialias={shrink})[0]  # on 0..255, not rounded")
    steps += ["x = x / 255  # value range [0, 1]",
              "x = (x - mean[c]) / std[c]  # per channel",
              f"feed x[None] as {input_name!r}: float32 [1, {c}, {h}, {w}], NCHW"]
    return Preprocessing(input_name=input_name, shape=[1, c, h, w], raw=_raw(c, data_spec), raw_shape=[c, h0, w0],
                         value_range=[0.0, 1.0], mean=[float(v) for v in mean], std=[float(v) for v in std],
                         resize=resize, steps=steps, latency_includes_resize=False)
