"""The deployed artifact: ONNX top-1 in ONNX Runtime, and the preprocessing each exported file records.

A member at a reduced input resolution (the small CNN of ``conftest``, trained
there, with a space that scales its resolution to 24x24) is exported the way the
exporter exports every member, so the recorded resize is a real one; no search runs.
The CNN exports to ONNX at 24x24 (its adaptive pooling maps 6x6 to 3x3), not at 28x28.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from autocompress.compress import deploy_copy
from autocompress.runtime import onnx_accuracy
from autocompress.runtime.artifact import PREPROCESSING_KEY, onnx_metadata, read_preprocessing
from autocompress.runtime.onnx_export import QUANTIZATION_KEY, export_onnx, quantization_settings
from autocompress.runtime.onnx_runtime import ort_session
from tests.helpers import roofline_profile

TINY_SPACE = """
version: 1
name: tiny-scaled
defaults: {keep: [0.5, 1.0], w_bits: [8, 32], a_bits: [8, 32], rank: [1.0], sparsity: [0.0]}
scaling: {mode: explicit, resolution: [0.857142857, 1.0]}  # 28 -> 24
"""


def fed_as_recorded(raw: torch.Tensor, record: dict) -> np.ndarray:
    """A raw uint8 C x H x W image through the steps ``record`` (an exported file's preprocessing) names."""
    assert record["layout"] == "NCHW" and record["dtype"] == "float32"
    assert list(raw.shape) == record["raw_shape"] and raw.dtype == torch.uint8
    x = raw.to(torch.float32)
    resize = record["resize"]
    if resize is not None:
        assert resize["function"] == "torch.nn.functional.interpolate" and resize["from_hw"] == list(raw.shape[1:])
        x = F.interpolate(x[None], size=tuple(resize["to_hw"]), mode=resize["mode"],
                          align_corners=resize["align_corners"], antialias=resize["antialias"])[0]
    low, high = record["value_range"]
    x = x / 255 * (high - low) + low
    mean = torch.tensor(record["mean"]).view(-1, 1, 1)
    std = torch.tensor(record["std"]).view(-1, 1, 1)
    x = ((x - mean) / std)[None].numpy().astype(np.float32)
    assert list(x.shape) == record["shape"]
    return x


@pytest.fixture(scope="module")
def scaled_member(mnist5k, trained_mnist_cnn, tmp_path_factory):
    """``(setup, built, out)``: one member at 24x24 (from 28x28), int8 everywhere, exported as the exporter does."""
    from autocompress.export.exporter import build_member
    from autocompress.search import SearchConfig, TrialRecord, prepare
    from autocompress.train import Evaluator, FitConfig

    tmp = tmp_path_factory.mktemp("artifact")
    (tmp / "tiny.yaml").write_text(TINY_SPACE)
    profile = roofline_profile().save(tmp / "roofline.json")
    config = SearchConfig(model="tiny_bn_cnn", data="mnist5k", space=str(tmp / "tiny.yaml"), profile=str(profile),
                          budgets=["size<=1.0x"], out=str(tmp), cache_dir=str(tmp / "cache"))
    setup = prepare(config, model=copy.deepcopy(trained_mnist_cnn[0]), data=mnist5k, progress=False)
    candidate = setup.space.uniform(w_bits=8, a_bits=8, resolution=0.857142857)
    assert setup.space.input_resolution(candidate) == (24, 24)
    record = TrialRecord(3, candidate, {}, True, True, 0.5, "proxy", 1.0)
    evaluator = Evaluator(teacher=setup.base_model, data=setup.data, fidelity="full",
                          fit=FitConfig(epochs=0.2, lr=0.01, seed=0, progress=False))
    built = build_member(setup, record, tmp, evaluator, seed=0)
    return setup, built, tmp


def test_member_accuracy_of_torch_and_onnx_files_on_the_same_images(scaled_member):
    setup, built, _ = scaled_member
    scored = built.artifact_accuracy
    assert scored.images == len(setup.data.test_y) == 1000 and scored.subset.startswith("the whole test split")
    assert scored.torch == pytest.approx(built.accuracy_test)  # the same images as the whole-split evaluation
    print("24x24 int8 member (torch / onnx fp32 / onnx int8):", scored.torch, scored.onnx_fp32, scored.onnx_int8)
    # the fp32 file is the float model: it lacks the 8-bit activation rounding the torch model trained with
    assert abs(scored.onnx_fp32 - scored.torch) <= 0.005 + 1e-9
    assert scored.fp32_max_abs_logit_diff < 1e-3  # ... and is that float model exactly
    # the int8 file keeps accuracy on this CPU (7-bit weights where u8 x s8 kernels saturate)
    assert scored.onnx_int8 is not None and abs(scored.onnx_int8 - scored.onnx_fp32) <= 0.01, scored
    assert abs(scored.onnx_int8 - scored.torch) <= 0.01
    assert scored.int8_quantization == quantization_settings() and not scored.note
    assert scored.torch > 0.8


def test_exported_files_carry_the_preprocessing_and_a_raw_image_fed_as_recorded_gets_the_torch_prediction(
        scaled_member):
    setup, built, out = scaled_member
    record = built.preprocessing.model_dump(mode="json")
    assert record["shape"] == [1, 1, 24, 24] and record["input_name"] == "input"
    assert record["raw_shape"] == [1, 28, 28] and record["value_range"] == [0.0, 1.0]
    assert record["mean"] == pytest.approx(list(setup.data.mean)) and record["std"] == pytest.approx(list(setup.data.std))
    assert record["resize"] == {"from_hw": [28, 28], "to_hw": [24, 24], "mode": "bilinear", "align_corners": False,
                                "antialias": True, "function": "torch.nn.functional.interpolate"}
    assert record["latency_includes_resize"] is False
    files = {key: out / built.files[key] for key in ("model.onnx", "model.int8.onnx")}
    for path in files.values():
        assert read_preprocessing(path) == record
    assert json.loads(onnx_metadata(files["model.int8.onnx"])[QUANTIZATION_KEY]) == quantization_settings()

    # from the raw uint8 test images, through the recorded resize and normalization only
    n = 32
    fed = np.concatenate([fed_as_recorded(setup.data.test_x[i], record) for i in range(n)])
    pipeline = next(iter(setup.data.loader("test", batch_size=n, shuffle=False, augment=False, resolution=24)))[0]
    np.testing.assert_allclose(fed, pipeline.numpy(), atol=1e-5, rtol=0)  # what the model was trained and scored on
    with torch.no_grad():
        scored = built.model(pipeline).argmax(1).numpy()  # as trained: 8-bit fake quantization
        float_model = deploy_copy(built.model)(pipeline).argmax(1).numpy()  # what the fp32 file was exported from
    for key, path in files.items():
        session = ort_session(path)
        got = np.array([session.run(None, {record["input_name"]: fed[i:i + 1]})[0].argmax(1)[0] for i in range(n)])
        if key == "model.onnx":
            assert (got == float_model).all()
        assert (got == scored).mean() >= 0.9, (key, got, scored)


def test_onnx_accuracy_scores_a_real_onnx_model(mnist5k, trained_mnist_cnn, tmp_path):
    model, _ = trained_mnist_cnn
    path = export_onnx(model, (1, 24, 24), tmp_path / "cnn.onnx", int8=False)
    batches = list(mnist5k.loader("test", batch_size=100, shuffle=False, augment=False, resolution=24))
    with torch.no_grad():
        expected = float(np.mean(np.concatenate([(model(x).argmax(1) == y).numpy() for x, y in batches])))
    assert expected > 0.8  # trained at 28x28, scored at 24x24
    assert onnx_accuracy(path, batches) == pytest.approx(expected, abs=0.002)
    assert onnx_accuracy(str(path), iter(batches[:3]), threads=1) == pytest.approx(
        float(np.mean(np.concatenate([(model(x).argmax(1) == y).numpy() for x, y in batches[:3]]))), abs=0.01)
    # a file with a dynamic batch dimension takes each batch whole
    dynamic = tmp_path / "dynamic.onnx"
    torch.onnx.export(copy.deepcopy(model), (torch.zeros(1, 1, 24, 24),), str(dynamic), dynamo=False,
                      input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "n"}})
    assert onnx.load(str(dynamic)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"
    assert onnx_accuracy(dynamic, batches) == pytest.approx(expected, abs=0.002)
    assert PREPROCESSING_KEY not in onnx_metadata(path)  # only the exporter writes how to feed a file


def test_onnx_accuracy_refuses_bad_input_by_file_and_batch(mnist5k, trained_mnist_cnn, tmp_path):
    model, _ = trained_mnist_cnn
    path = export_onnx(model, (1, 24, 24), tmp_path / "cnn.onnx", int8=False)
    x, y = next(iter(mnist5k.loader("test", batch_size=4, shuffle=False, augment=False, resolution=24)))
    with pytest.raises(ValueError, match=r"cnn.onnx: batch 1: images of shape \[4, 1, 28, 28\], the model takes"):
        onnx_accuracy(path, [(x, y), (torch.zeros(4, 1, 28, 28), y)])
    with pytest.raises(ValueError, match=r"cnn.onnx: batch 0: labels of shape \[3\], expected \[4\]"):
        onnx_accuracy(path, [(x, y[:3])])
    with pytest.raises(ValueError, match="cnn.onnx: no images to score"):
        onnx_accuracy(path, [])
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        onnx_accuracy(path, [(x, y)], threads=0)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        onnx_accuracy(tmp_path / "missing.onnx", [(x, y)])
    with pytest.raises(ValueError, match=rf"cnn.onnx: no '{PREPROCESSING_KEY}' in the model's metadata_props"):
        read_preprocessing(path)
