"""Tests for autocompress.data: real bundled data, tiny hand-made folders/zips/pickles/npz."""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocompress.data import DataError, ImageData, load_data
from autocompress.data import cifar10 as cifar10_source
from autocompress.data import imagefolder as imagefolder_source
from autocompress.data.augment import AugmentPolicy, augment_batch, policy_for, random_crop

CIFAR_ZIP = Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg.zip"


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_data("mnist5k", seed=0)


def _class_counts(y: torch.Tensor, k: int = 10) -> list[int]:
    return torch.bincount(y, minlength=k).tolist()


# ---------------------------------------------------------------- built-in sources


def test_mnist5k_splits_are_sized_stratified_and_typed(mnist: ImageData) -> None:
    assert (len(mnist.train_y), len(mnist.val_y), len(mnist.test_y)) == (3500, 500, 1000)
    assert _class_counts(mnist.test_y) == [100] * 10  # 500 per class in the source
    assert _class_counts(mnist.val_y) == [50] * 10
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    assert mnist.classes == [str(i) for i in range(10)]
    assert 0.1 < mnist.mean[0] < 0.15 and 0.28 < mnist.std[0] < 0.34
    assert int(mnist.train_x.max()) == 255


def test_mnist5k_split_is_seeded(mnist: ImageData) -> None:
    again = load_data("mnist5k", seed=0)
    assert torch.equal(again.test_x, mnist.test_x) and torch.equal(again.train_y, mnist.train_y)
    other = load_data("mnist5k", seed=1)
    assert not torch.equal(other.test_x, mnist.test_x)


def test_max_train_subsamples_stratified_and_seeded(mnist: ImageData) -> None:
    small = load_data("mnist5k", seed=0, max_train=200)
    assert len(small.train_y) == 200 and _class_counts(small.train_y) == [20] * 10
    assert torch.equal(small.test_x, mnist.test_x)  # only train shrinks
    assert small.mean == mnist.mean  # stats come from the full train split
    assert torch.equal(load_data("mnist5k", seed=0, max_train=200).train_x, small.train_x)


def test_digits_scaled_to_uint8() -> None:
    d = load_data("digits", val_fraction=0.0, test_fraction=0.25)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 1797 and len(d.val_y) == 0
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0


# ---------------------------------------------------------------- loader + augmentation


def test_loader_batches_shapes_and_normalisation(mnist: ImageData) -> None:
    loader = mnist.loader("train", batch_size=512, augment=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 7  # ceil(3500 / 512)
    x, y = batches[0]
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert batches[-1][0].shape[0] == 3500 - 6 * 512
    allx = torch.cat([b[0] for b in batches])
    assert abs(allx.mean().item()) < 1e-4 and abs(allx.std().item() - 1) < 1e-3
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(mnist.train_y.tolist())


def test_loader_defaults_epochs_and_seed(mnist: ImageData) -> None:
    val = list(mnist.loader("val", batch_size=100))
    assert torch.equal(torch.cat([b[1] for b in val]), mnist.val_y)  # eval: no shuffle, in order
    a, b = (
        mnist.loader("train", batch_size=64, seed=3),
        mnist.loader("train", batch_size=64, seed=3),
    )
    a1, b1 = next(iter(a)), next(iter(b))
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])  # same seed, same epoch
    a2 = next(iter(a))
    assert not torch.equal(a1[1], a2[1])  # next epoch: new order
    b.set_epoch(1)
    assert torch.equal(next(iter(b))[0], a2[0])  # resume at an epoch reproduces it
    c1 = next(iter(mnist.loader("train", batch_size=64, seed=4)))
    assert not torch.equal(a1[1], c1[1])


def test_loader_limit_and_resolution(mnist: ImageData) -> None:
    lim = mnist.loader("test", batch_size=32, limit=100)
    assert len(lim) == 4 and lim.num_samples == 100
    first = torch.cat([y for _, y in lim])
    assert torch.equal(first, torch.cat([y for _, y in lim]))  # fixed subset across epochs
    assert len(set(first.tolist())) > 1  # a seeded sample, not the first class only
    up = next(iter(mnist.loader("val", batch_size=8, resolution=32)))[0]
    down = next(iter(mnist.loader("train", batch_size=8, resolution=14)))[0]
    assert up.shape == (8, 1, 32, 32) and down.shape == (8, 1, 14, 14)
    assert len(mnist.loader("val", limit=0)) == 0


def test_augmentation_keeps_shape_and_is_seeded() -> None:
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out1 = augment_batch(x, torch.Generator().manual_seed(0))
    out2 = augment_batch(x, torch.Generator().manual_seed(0))
    out3 = augment_batch(x, torch.Generator().manual_seed(1))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert policy_for(3, 32, 32).padding == 4 and policy_for(3, 32, 32).flip
    assert policy_for(1, 28, 28).padding == 2 and not policy_for(1, 28, 28).flip


def test_random_crop_shifts_content_with_zero_padding() -> None:
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    pos = out.flatten(1).argmax(1)
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # padding of 2 never crops the centre pixel away
    assert len(set(pos.tolist())) > 5  # shifted differently per sample
    ones = random_crop(torch.ones(64, 1, 9, 9), 2, torch.Generator().manual_seed(0))
    assert ones.min() == 0  # zero padding shows up at the borders


def test_flip_mirrors_some_samples_and_keeps_others() -> None:
    x = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0), AugmentPolicy(padding=0, flip=True))
    same = [torch.equal(out[k], x[k]) for k in range(32)]
    mirrored = [torch.equal(out[k], x[k].flip(-1)) for k in range(32)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 4 < sum(mirrored) < 28


# ---------------------------------------------------------------- imagefolder


def _colour(cls: int, i: int) -> tuple[int, int, int]:
    return (40 * cls + 10, 7 * i, 200 - 5 * i)


def _make_folder(
    root: Path, classes=("cat", "dog"), per_class: int = 6, size=(5, 4), mode="RGB"
) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = _colour(c, i) if mode == "RGB" else 30 * c + i
            Image.new(mode, size, colour).save(root / name / f"{i}.png")
    return root


def _zip_folder(folder: Path, zip_path: Path, wrap: str | None = "wrapped") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("__MACOSX/._junk.png", b"not an image")
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            zf.write(p, f"{wrap}/{rel}" if wrap else rel)
    return zip_path


def test_imagefolder_flat_folder(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "pets")
    d = load_data(f"imagefolder:{root}", val_fraction=0.2, test_fraction=0.2)
    assert d.classes == ["cat", "dog"] and d.input_shape == (3, 4, 5) and d.name == "pets"
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (8, 2, 2)
    x, y = torch.cat([d.train_x, d.val_x, d.test_x]), torch.cat([d.train_y, d.val_y, d.test_y])
    pixels = {(int(y[k]), tuple(x[k, :, 0, 0].tolist())) for k in range(len(y))}
    assert pixels == {(c, _colour(c, i)) for c in range(2) for i in range(6)}  # PNG round trip


def test_imagefolder_grayscale_and_split_layout(tmp_path: Path) -> None:
    _make_folder(tmp_path / "g" / "train", mode="L", per_class=5)
    _make_folder(tmp_path / "g" / "val", mode="L", per_class=2)  # a lone val/ is the held-out split
    d = load_data(f"imagefolder:{tmp_path / 'g'}", val_fraction=0.2)
    assert d.input_shape == (1, 4, 5)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (8, 2, 4)
    Image.new("RGB", (5, 4), (1, 2, 3)).save(tmp_path / "g" / "val" / "cat" / "rgb.png")
    assert load_data(f"imagefolder:{tmp_path / 'g'}").input_shape == (3, 4, 5)  # grey joins RGB


def test_imagefolder_zip_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_folder(tmp_path / "src" / "train")
    _make_folder(tmp_path / "src" / "test", per_class=3)
    zpath = _zip_folder(tmp_path / "src", tmp_path / "tiny.zip")
    cache = tmp_path / "cache"
    d = load_data(f"imagefolder:{zpath}", cache_dir=cache, val_fraction=0.0)
    assert d.name == "tiny" and d.classes == ["cat", "dog"]
    assert (len(d.train_y), len(d.test_y)) == (12, 6)
    assert len(list(cache.glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(imagefolder_source, "_decode_all", no_decoding)
    again = load_data(f"imagefolder:{zpath}", cache_dir=cache, val_fraction=0.0)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    flat = _zip_folder(_make_folder(tmp_path / "flat"), tmp_path / "flat.zip", wrap=None)
    monkeypatch.undo()
    assert load_data(f"imagefolder:{flat}").classes == ["cat", "dog"]


def test_imagefolder_mixed_sizes_names_file_and_sizes(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "mixed")
    Image.new("RGB", (7, 3)).save(root / "dog" / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png is 7x3 but .* is 5x4"):
        load_data(f"imagefolder:{root}")


def test_imagefolder_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    root = _make_folder(tmp_path / "broken")
    (root / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode image .*bad\.png"):
        load_data(f"imagefolder:{root}")
    (tmp_path / "fake.zip").write_bytes(b"nope")
    with pytest.raises(DataError, match="fake.zip"):
        load_data(f"imagefolder:{tmp_path / 'fake.zip'}")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason="shared cifar10-jpeg.zip not present")
def test_real_cifar10_jpeg_zip(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    d = load_data(f"imagefolder:{CIFAR_ZIP}", cache_dir=tmp_path, val_fraction=0.1)
    cold = time.perf_counter() - t0
    assert len(d.train_y) + len(d.val_y) == 50_000 and len(d.test_y) == 10_000
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32) and "airplane" in d.classes
    assert _class_counts(d.test_y) == [1000] * 10
    t0 = time.perf_counter()
    warm = load_data(f"imagefolder:{CIFAR_ZIP}", cache_dir=tmp_path, val_fraction=0.1)
    assert torch.equal(warm.test_y, d.test_y) and time.perf_counter() - t0 < cold


# ---------------------------------------------------------------- cifar10 pickles


def _cifar_folder(root: Path, per_batch: int = 20, n_batches: int = 2) -> tuple[Path, np.ndarray]:
    root.mkdir()
    rng = np.random.default_rng(0)
    first = None
    for name in [f"data_batch_{i + 1}" for i in range(n_batches)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        with open(root / name, "wb") as fh:
            pickle.dump(
                {b"batch_label": name.encode(), b"data": data, b"labels": labels}, fh, protocol=2
            )
        first = data if first is None else first
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return root, first


def test_cifar10_pickles(tmp_path: Path) -> None:
    root, first = _cifar_folder(tmp_path / "cifar-10-batches-py")
    d = load_data(f"cifar10:{root}", val_fraction=0.1)
    assert d.input_shape == (3, 32, 32) and d.classes[3] == "class3"
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (36, 4, 20)
    img = torch.from_numpy(first[0].reshape(3, 32, 32))  # CIFAR rows: 1024 R, then G, then B
    x = torch.cat([d.train_x, d.val_x])
    assert any(torch.equal(img, x[k]) for k in range(len(x)))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_malicious_pickle(tmp_path: Path) -> None:
    root, _ = _cifar_folder(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(root / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": _Evil(marker), b"labels": []}, fh, protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle .*system"):
        load_data(f"cifar10:{root}")
    assert not marker.exists()


def test_cifar10_bad_folder(tmp_path: Path) -> None:
    root, _ = _cifar_folder(tmp_path / "c")
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match="missing .*test_batch"):
        load_data(f"cifar10:{root}")
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch"):
        load_data(f"cifar10:{root}")


# ---------------------------------------------------------------- npz


def test_npz_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    p = tmp_path / "a.npz"
    np.savez(p, x_train=nhwc, y_train=np.arange(30) % 3, x_test=nhwc[:9], y_test=np.arange(9) % 3)
    d = load_data(f"npz:{p}", val_fraction=0.2)
    assert d.input_shape == (3, 6, 6) and d.num_classes == 3 and d.name == "a"
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (24, 6, 9)
    assert any(
        torch.equal(torch.from_numpy(nhwc[0].transpose(2, 0, 1)), d.train_x[k]) for k in range(24)
    ) or any(
        torch.equal(torch.from_numpy(nhwc[0].transpose(2, 0, 1)), d.val_x[k]) for k in range(6)
    )

    q = tmp_path / "b.npz"
    np.savez(
        q,
        x=rng.random((20, 5, 5)).astype(np.float32),
        y=np.arange(20) % 2,
        classes=np.array(["no", "yes"]),
    )
    e = load_data(f"npz:{q}")
    assert e.input_shape == (1, 5, 5) and e.classes == ["no", "yes"]
    assert len(e.train_y) + len(e.val_y) + len(e.test_y) == 20

    r = tmp_path / "c.npz"
    np.savez(
        r,
        x_train=nhwc.transpose(0, 3, 1, 2),
        y_train=np.arange(30) % 3,
        x_val=nhwc[:5].transpose(0, 3, 1, 2),
        y_val=np.arange(5) % 3,
    )
    f = load_data(f"npz:{r}")
    assert f.input_shape == (3, 6, 6) and len(f.val_y) == 5 and len(f.test_y) == 6


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"x_train": np.full((4, 3, 3), 2.0), "y_train": np.zeros(4, int)},
            "'x_train' is float but not within",
        ),
        (
            {"x_train": np.zeros((4, 3, 3), np.uint8), "y_train": np.zeros(3, int)},
            "'y_train' must be 4 integer",
        ),
        (
            {
                "x_train": np.zeros((4, 3, 3), np.uint8),
                "y_train": np.zeros(4, int),
                "x_val": np.zeros((2, 3, 3)),
            },
            "missing key 'y_val'",
        ),
        (
            {"x_train": np.zeros((4, 9, 9, 9), np.uint8), "y_train": np.zeros(4, int)},
            "cannot tell the channel axis",
        ),
        ({"images": np.zeros((4, 3, 3), np.uint8)}, "missing key 'x_train'"),
    ],
)
def test_npz_bad_keys(tmp_path: Path, arrays: dict, match: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match):
        load_data(f"npz:{p}")


# ---------------------------------------------------------------- errors


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data spec 'cifar100'.*mnist5k.*imagefolder:PATH"):
        load_data("cifar100")
    with pytest.raises(ValueError):  # DataError is a ValueError
        load_data("nope:thing")
    with pytest.raises(DataError, match=r"missing\.npz: no such file"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(DataError, match="needs a path"):
        load_data("imagefolder:")
    with pytest.raises(DataError, match="takes no path"):
        load_data("mnist5k:/tmp/x")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"x\.npz.*not a readable \.npz"):
        load_data(f"npz:{tmp_path / 'x.npz'}")
    with pytest.raises(ValueError, match="val_fraction"):
        load_data("digits", val_fraction=1.5)


def test_probe_reads_shape_and_classes_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autocompress.data import probe_data

    _make_folder(tmp_path / "src" / "train", mode="L")
    _make_folder(tmp_path / "src" / "test", mode="L", per_class=3)
    specs = [f"imagefolder:{_make_folder(tmp_path / 'pets')}",
             f"imagefolder:{_zip_folder(tmp_path / 'src', tmp_path / 'tiny.zip')}",
             f"cifar10:{_cifar_folder(tmp_path / 'cifar-10-batches-py')[0]}", "mnist5k"]
    loaded = [load_data(spec, val_fraction=0.0) for spec in specs]

    def refuse(*args, **kwargs):
        raise AssertionError("the probe read the images")

    monkeypatch.setattr(imagefolder_source, "_decode_all", refuse)
    monkeypatch.setattr(cifar10_source, "_cifar_batch", refuse)
    for spec, data in zip(specs, loaded, strict=True):
        info = probe_data(spec)
        assert (info.name, info.input_shape, info.num_classes) == (data.name, data.input_shape, data.num_classes)
    with pytest.raises(DataError, match="no such file or directory"):
        probe_data(f"cifar10:{tmp_path / 'nowhere'}")
