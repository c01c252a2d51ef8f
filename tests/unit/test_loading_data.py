"""Data loaders: every source form yields checked pixel-space tensors; every mistake a DataError."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robaudit.errors import DataError
from robaudit.loading import DataSet, digits_arrays, load_data

SHAPE_8 = (1, 8, 8)


def _load(source: str | Path, **kw: Any) -> DataSet:
    """load_data with digits-like defaults, so each test states only what it varies."""
    args: dict[str, Any] = {
        "split": "test",
        "input_shape": SHAPE_8,
        "bounds": (0.0, 1.0),
        "num_classes": 10,
        "samples": None,
        "seed": 0,
    }
    args.update(kw)
    return load_data(str(source), **args)


def _npz(tmp_path: Path, name: str = "d.npz", **arrays: Any) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- builtin:digits


def test_digits_split_is_fixed_disjoint_and_complete() -> None:
    """The documented rule: perm = RandomState(0).permutation(1797); test = perm[:500]."""
    x_te, y_te = digits_arrays("test")
    x_tr, y_tr = digits_arrays("train")
    x_all, y_all = digits_arrays("all")
    assert x_te.shape == (500, 1, 8, 8)
    assert x_tr.shape == (1297, 1, 8, 8)
    assert x_all.shape == (1797, 1, 8, 8)
    assert x_te.dtype == np.float32
    assert y_te.dtype == np.int64
    perm = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(x_te, x_all[perm[:500]])
    np.testing.assert_array_equal(y_tr, y_all[perm[500:]])
    assert set(perm[:500].tolist()).isdisjoint(perm[500:].tolist())
    # real digit images: 0..16 scaled by 1/16, so every value is a multiple of 1/16
    assert x_all.min() == 0.0
    assert x_all.max() == 1.0
    np.testing.assert_array_equal(x_all * 16, np.round(x_all * 16))
    assert set(np.unique(y_all).tolist()) == set(range(10))
    x_again, y_again = digits_arrays("test")
    np.testing.assert_array_equal(x_te, x_again)
    np.testing.assert_array_equal(y_te, y_again)


def test_digits_arrays_are_copies_not_the_cache() -> None:
    x, _ = digits_arrays("all")
    x[:] = 7.0
    assert digits_arrays("all")[0].max() == 1.0


def test_digits_bad_split_names_it() -> None:
    with pytest.raises(DataError, match=r"'validation'.*test, train or all"):
        digits_arrays("validation")
    with pytest.raises(DataError, match=r"validation"):
        _load("builtin:digits", split="validation")


def test_load_builtin_digits() -> None:
    ds = _load("builtin:digits")
    assert ds.x.shape == (500, 1, 8, 8)
    assert ds.x.dtype == torch.float32
    assert ds.y.shape == (500,)
    assert ds.y.dtype == torch.int64
    assert ds.indices == tuple(range(500))
    assert ds.source == "builtin:digits"
    assert ds.split == "test"
    assert ds.class_names == tuple(str(i) for i in range(10))
    x, y = digits_arrays("test")
    assert torch.equal(ds.x, torch.from_numpy(x))
    assert torch.equal(ds.y, torch.from_numpy(y))


def test_samples_subset_is_seeded_sorted_and_matches_source() -> None:
    a = _load("builtin:digits", samples=50, seed=3)
    b = _load("builtin:digits", samples=50, seed=3)
    c = _load("builtin:digits", samples=50, seed=4)
    assert len(a.indices) == 50
    assert len(set(a.indices)) == 50
    assert list(a.indices) == sorted(a.indices)
    assert a.indices == b.indices
    assert torch.equal(a.x, b.x)
    assert a.indices != c.indices
    x, y = digits_arrays("test")
    idx = np.asarray(a.indices)
    assert torch.equal(a.x, torch.from_numpy(x[idx]))
    assert torch.equal(a.y, torch.from_numpy(y[idx]))


def test_samples_more_than_available_gives_all() -> None:
    assert len(_load("builtin:digits", samples=10_000).indices) == 500


@pytest.mark.parametrize("samples", [0, -5])
def test_samples_must_be_positive(samples: int) -> None:
    with pytest.raises(DataError, match=r"samples"):
        _load("builtin:digits", samples=samples)


def test_digits_map_onto_other_bounds_and_channels() -> None:
    ds = _load("builtin:digits", bounds=(-1.0, 1.0), input_shape=(3, 8, 8))
    x, _ = digits_arrays("test")
    assert ds.x.shape == (500, 3, 8, 8)
    expected = torch.from_numpy(-1.0 + 2.0 * x)
    for ch in range(3):
        torch.testing.assert_close(ds.x[:, ch : ch + 1], expected)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(DataError, match=r"\(1, 8, 8\).*\(1, 28, 28\)"):
        _load("builtin:digits", input_shape=(1, 28, 28))


def test_unknown_builtin_and_unknown_forms() -> None:
    with pytest.raises(DataError, match=r"builtin:mnist.*builtin:digits"):
        _load("builtin:mnist")
    with pytest.raises(DataError, match=r"nowhere.npz.*not found.*builtin:digits"):
        _load("nowhere.npz")


def test_not_a_known_form(tmp_path: Path) -> None:
    txt = tmp_path / "data.csv"
    txt.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"data.csv.*not a known source form.*npz"):
        _load(txt)


def test_labels_outside_num_classes() -> None:
    with pytest.raises(DataError, match=r"outside \[0, 5\)"):
        _load("builtin:digits", num_classes=5)


# ---------------------------------------------------------------- .npz


def test_npz_float_nchw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    y = np.arange(6) % 3
    ds = _load(_npz(tmp_path, x=x, y=y), num_classes=3)
    assert torch.equal(ds.x, torch.from_numpy(x))
    assert ds.y.tolist() == y.tolist()
    assert ds.y.dtype == torch.int64
    assert ds.indices == tuple(range(6))
    assert ds.class_names is None


def test_npz_float64_and_integral_float_labels(tmp_path: Path) -> None:
    x = np.full((2, 1, 8, 8), 0.25)
    ds = _load(_npz(tmp_path, x=x, y=np.array([1.0, 2.0])))
    assert ds.x.dtype == torch.float32
    assert ds.y.tolist() == [1, 2]


def test_npz_uint8_channel_last_scaled_to_bounds(tmp_path: Path) -> None:
    x = np.zeros((3, 4, 5, 3), dtype=np.uint8)  # N x H x W x C
    x[0] = 255
    x[1, :, :, 0] = 51  # 0.2 of 255 in the red channel only
    ds = _load(_npz(tmp_path, x=x, y=np.array([0, 1, 2])), input_shape=(3, 4, 5), bounds=(-1, 1))
    assert ds.x.shape == (3, 3, 4, 5)
    assert torch.all(ds.x[0] == 1.0)
    assert torch.all(ds.x[2] == -1.0)
    torch.testing.assert_close(ds.x[1, 0], torch.full((4, 5), -1.0 + 2 * 0.2))
    assert torch.all(ds.x[1, 1:] == -1.0)


def test_npz_uint8_nhw_and_rgb_to_gray(tmp_path: Path) -> None:
    gray = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    ds = _load(_npz(tmp_path, "g.npz", x=gray, y=np.array([0, 1])))
    torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(gray / 255.0).float())
    rgb = np.zeros((1, 3, 8, 8), dtype=np.float32)
    rgb[0, 0] = 1.0  # pure red -> luminance 0.299
    ds = _load(_npz(tmp_path, "c.npz", x=rgb, y=np.array([0])))
    assert ds.x.shape == (1, 1, 8, 8)
    torch.testing.assert_close(ds.x, torch.full((1, 1, 8, 8), 0.299))


def test_npz_class_names(tmp_path: Path) -> None:
    path = _npz(tmp_path, x=np.zeros((2, 1, 8, 8), np.float32), y=[0, 1], class_names=["a", "b"])
    assert _load(path, num_classes=2).class_names == ("a", "b")


def test_npz_normalized_data_hint(tmp_path: Path) -> None:
    x = np.full((2, 1, 8, 8), -0.4, dtype=np.float32)
    x[1] = 2.1
    with pytest.raises(DataError, match=r"d\.npz.*-0\.4.*2\.1.*\[0, 1\].*already normalized"):
        _load(_npz(tmp_path, x=x, y=[0, 1]))


def test_npz_0_255_float_hint(tmp_path: Path) -> None:
    x = np.full((2, 1, 8, 8), 200.0, dtype=np.float32)
    with pytest.raises(DataError, match=r"span.*200.*0-255"):
        _load(_npz(tmp_path, x=x, y=[0, 1]))


def test_npz_within_tolerance_is_clipped(tmp_path: Path) -> None:
    x = np.full((1, 1, 8, 8), 1.0 + 5e-7, dtype=np.float32)
    ds = _load(_npz(tmp_path, x=x, y=[0]))
    assert float(ds.x.max()) <= 1.0


def test_npz_nan(tmp_path: Path) -> None:
    x = np.zeros((3, 1, 8, 8), dtype=np.float32)
    x[2, 0, 1, 1] = np.nan
    with pytest.raises(DataError, match=r"d.npz.*NaN/inf.*sample 2"):
        _load(_npz(tmp_path, x=x, y=[0, 1, 2]))


def test_npz_non_integer_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"d\.npz.*non-integer label 0\.5"):
        _load(_npz(tmp_path, x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([0.5, 1.0])))
    with pytest.raises(DataError, match=r"y has dtype"):
        _load(_npz(tmp_path, x=np.zeros((1, 1, 8, 8), np.float32), y=np.array(["cat"])))


def test_npz_one_hot_labels_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"one-hot"):
        _load(_npz(tmp_path, x=np.zeros((2, 1, 8, 8), np.float32), y=np.eye(2, 10)))


def test_npz_label_range(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label 10 at position 1 is outside \[0, 10\)"):
        _load(_npz(tmp_path, x=np.zeros((2, 1, 8, 8), np.float32), y=[3, 10]))
    with pytest.raises(DataError, match=r"label -1"):
        _load(_npz(tmp_path, x=np.zeros((1, 1, 8, 8), np.float32), y=[-1]))


def test_npz_length_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x has 3 samples but y has 2"):
        _load(_npz(tmp_path, x=np.zeros((3, 1, 8, 8), np.float32), y=[0, 1]))


def test_npz_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"d.npz.*no samples"):
        _load(_npz(tmp_path, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64)))


def test_npz_missing_array(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"d\.npz.*\['x'\].*'y'"):
        _load(_npz(tmp_path, x=np.zeros((1, 1, 8, 8), np.float32)))


def test_npz_shape_mismatch_and_channel_last_float(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\(1, 6, 6\).*input_shape is \(1, 8, 8\)"):
        _load(_npz(tmp_path, x=np.zeros((1, 1, 6, 6), np.float32), y=[0]))
    with pytest.raises(DataError, match=r"channel-last"):
        _load(_npz(tmp_path, x=np.zeros((1, 8, 8, 3), np.float32), y=[0]), input_shape=(3, 8, 8))


def test_npz_unconvertible_channels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"4 channels.*takes 3"):
        _load(_npz(tmp_path, x=np.zeros((1, 4, 8, 8), np.float32), y=[0]), input_shape=(3, 8, 8))


def test_npz_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dtype int64.*uint8"):
        _load(_npz(tmp_path, x=np.zeros((1, 1, 8, 8), np.int64), y=[0]))


def test_npz_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(DataError, match=r"broken.npz.*not a readable"):
        _load(path)


# ---------------------------------------------------------------- ImageFolder


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _image_folder(root: Path, per_class: int = 3, size: tuple[int, int] = (8, 8)) -> Path:
    """root/<cat|dog>/i.png, RGB; pixel value encodes (class, index) so tests can trace samples."""
    h, w = size
    for ci, cls in enumerate(("cat", "dog")):
        for i in range(per_class):
            arr = np.zeros((h, w, 3), dtype=np.uint8)
            arr[..., 0] = 100 * ci + 10 * i
            arr[..., 1] = 200
            _png(root / cls / f"{i}.png", arr)
    return root


def test_image_folder_rgb(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    ds = _load(root, input_shape=(3, 8, 8), num_classes=2)
    assert ds.class_names == ("cat", "dog")
    assert ds.x.shape == (6, 3, 8, 8)
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    red = ds.x[:, 0, 0, 0] * 255
    torch.testing.assert_close(red, torch.tensor([0.0, 10, 20, 100, 110, 120]))
    torch.testing.assert_close(ds.x[:, 1], torch.full((6, 8, 8), 200 / 255))
    assert torch.all(ds.x[:, 2] == 0)


def test_image_folder_gray_uses_split_subfolder(tmp_path: Path) -> None:
    _image_folder(tmp_path / "ds" / "test", per_class=2)
    _image_folder(tmp_path / "ds" / "train", per_class=4)
    ds = _load(tmp_path / "ds", split="test", input_shape=(1, 8, 8), num_classes=2)
    assert ds.x.shape == (4, 1, 8, 8)
    expected = Image.open(tmp_path / "ds" / "test" / "dog" / "1.png").convert("L")
    torch.testing.assert_close(
        ds.x[3, 0] * 255, torch.tensor(np.asarray(expected), dtype=torch.float32)
    )
    assert len(_load(tmp_path / "ds", split="train", num_classes=2).indices) == 8


def test_image_folder_subset_mixes_classes(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs", per_class=10)
    ds = _load(root, input_shape=(3, 8, 8), num_classes=2, samples=6, seed=1)
    assert len(ds.indices) == 6
    assert list(ds.indices) == sorted(ds.indices)
    assert set(ds.y.tolist()) == {0, 1}
    assert ds.y.tolist() == [0 if i < 10 else 1 for i in ds.indices]


def test_image_folder_wrong_size_names_file(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    _png(root / "dog" / "big.png", np.zeros((9, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"big\.png.*8x9.*expects 8x8"):
        _load(root, input_shape=(3, 8, 8), num_classes=2)


def test_image_folder_corrupt_image_names_file(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / "cat" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"zz\.png.*cannot be read"):
        _load(root, input_shape=(3, 8, 8), num_classes=2)


def test_image_folder_too_many_classes(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"outside \[0, 1\)"):
        _load(root, num_classes=1)


def test_image_folder_without_classes_or_images(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"flat.*no class subfolders"):
        _load(tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty.*no samples"):
        _load(tmp_path / "empty")


def test_image_folder_channel_count_unsupported(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"takes 2 channels"):
        _load(root, input_shape=(2, 8, 8), num_classes=2)


# ---------------------------------------------------------------- torchvision


def _fake_mnist(root: Path, n_test: int = 5) -> None:
    """A tiny MNIST in torchvision's raw idx layout (all four files must exist)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 3), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + imgs.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes()
        )


def test_torchvision_mnist_from_disk(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    ds = _load(f"torchvision:MNIST:{tmp_path}", input_shape=(1, 28, 28))
    assert ds.x.shape == (5, 1, 28, 28)
    assert ds.y.tolist() == [0, 1, 2, 3, 4]
    assert ds.class_names is not None
    assert len(ds.class_names) == 10
    assert float(ds.x.min()) >= 0.0
    assert float(ds.x.max()) <= 1.0
    raw = (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    first = np.frombuffer(raw, dtype=np.uint8)[: 28 * 28].reshape(28, 28)
    torch.testing.assert_close(ds.x[0, 0], torch.from_numpy(first / 255.0).float())
    train = _load(f"torchvision:MNIST:{tmp_path}", split="train", input_shape=(3, 28, 28))
    assert train.x.shape == (3, 3, 28, 28)


def test_torchvision_missing_dataset_must_be_on_disk(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"CIFAR10.*already be on disk.*never downloads"):
        _load(f"torchvision:CIFAR10:{tmp_path}", input_shape=(3, 32, 32))
    with pytest.raises(DataError, match=r"already be on disk"):
        _load(f"torchvision:MNIST:{tmp_path / 'nope'}", input_shape=(1, 28, 28))


def test_torchvision_bad_forms(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"ImageNet.*not supported.*CIFAR10"):
        _load(f"torchvision:ImageNet:{tmp_path}")
    with pytest.raises(DataError, match=r"torchvision:NAME:ROOT"):
        _load("torchvision:MNIST")
    with pytest.raises(DataError, match=r"'all'.*test or train"):
        _load(f"torchvision:MNIST:{tmp_path}", split="all")
