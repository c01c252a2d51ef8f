"""Regenerate the committed files of the bad-input corpus (``python tests/data/bad/make_fixtures.py``).

Every file is deterministic, so rerunning this leaves ``git status`` clean. Inputs that would
duplicate the committed sample models (truncated or mismatched checkpoints, models with the
wrong output) or that git cannot hold (empty folders, names Windows refuses) are built at test
time instead, by the recipes in ``tests/cli/test_bad_corpus.py``.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# A valid config in the corpus's own shape, each hostile file is a variant of it.
GOOD = """\
version: 1
seed: 0
model:
  input_shape: [1, 8, 8]
  num_classes: 10
  bounds: [0.0, 1.0]
  arch: "robaudit.models.digits:DigitsCNN"
data: {source: "builtin:digits", split: test, samples: 40}
attacks:
  - {name: fgsm, norm: linf, eps: [0.1, 0.2]}
report: {examples: 2}
engine: {device: cpu}
"""


def _with_kwargs(extra: str) -> str:
    """GOOD with ``extra`` as model.arch_kwargs: a free-form mapping, where hostile YAML would
    otherwise pass validation."""
    return GOOD.replace('  arch: "robaudit.models.digits:DigitsCNN"\n',
                        f'  arch: "robaudit.models.digits:DigitsCNN"\n  arch_kwargs: {extra}\n')


def yaml_files() -> dict[str, bytes]:
    laughs = ["  lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, 10):
        laughs.append(f"  lol{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]")
    bomb = GOOD.replace('  arch: "robaudit.models.digits:DigitsCNN"\n',
                        '  arch: "robaudit.models.digits:DigitsCNN"\n  arch_kwargs:\n'
                        + "\n".join("  " + line for line in laughs) + "\n")
    depth = 5000
    return {
        "malformed.yaml": b"model: {input_shape: [1, 8, 8]\nattacks: [\n",
        "empty.yaml": b"",
        "comments_only.yaml": b"# nothing here\n\n# still nothing\n",
        "top_level_list.yaml": b"- model\n- attacks\n",
        "top_level_scalar.yaml": b"just a sentence, not a config\n",
        "billion_laughs.yaml": bomb.encode(),
        "recursive_alias.yaml": _with_kwargs("&self {again: *self}").encode(),
        "deep_nesting.yaml": _with_kwargs("{deep: " + "[" * depth + "]" * depth + "}").encode(),
        "moderate_nesting.yaml": _with_kwargs("{deep: " + "[" * 200 + "]" * 200 + "}").encode(),
        "latin1.yaml": ("# réglages de l'audit\n" + GOOD).encode("latin-1"),
        "utf16.yaml": GOOD.encode("utf-16"),
        "binary.yaml": bytes(range(256)) * 4,
        "nul_byte.yaml": GOOD.encode() + b"\x00\n",
        "tabs.yaml": GOOD.replace("  input_shape", "\tinput_shape").encode(),
        "python_tag.yaml": b"!!python/object/apply:os.system ['echo pwned']\n",
        "python_tag_nested.yaml": GOOD.replace(
            "seed: 0", "seed: !!python/object/apply:os.getpid []").encode(),
        "huge_float_eps.yaml": GOOD.replace("[0.1, 0.2]", "[0.1, 1.0e+400]").encode(),
        "huge_int_eps.yaml": GOOD.replace("[0.1, 0.2]", "[0.1, " + "9" * 400 + "]").encode(),
        "huge_exponent_eps.yaml": GOOD.replace("[0.1, 0.2]", "[0.1, '1e999999999']").encode(),
        "huge_int_seed.yaml": GOOD.replace("seed: 0", "seed: 123456789012345678901234567890").encode(),
        "giant_int.yaml": GOOD.replace("seed: 0", "seed: " + "7" * 5000).encode(),
        "non_string_key.yaml": GOOD.replace("seed: 0", "seed: 0\n1: one").encode(),
        "null_key.yaml": GOOD.replace("seed: 0", "seed: 0\nnull: nothing").encode(),
        "nan_mean.yaml": GOOD.replace("  bounds: [0.0, 1.0]\n",
                                      "  bounds: [0.0, 1.0]\n  mean: [.nan]\n  std: [1.0]\n").encode(),
        "inf_std.yaml": GOOD.replace("  bounds: [0.0, 1.0]\n",
                                     "  bounds: [0.0, 1.0]\n  std: [.inf]\n").encode(),
    }


def _png(w: int, h: int, fill: int) -> bytes:
    """An 8-bit grayscale PNG, written by hand so the bytes never depend on Pillow's version."""
    raw = b"".join(b"\x00" + bytes([fill]) * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    files = {}
    for name, arr in arrays.items():
        b = io.BytesIO()
        np.lib.format.write_array(b, np.asanyarray(arr), allow_pickle=True)
        files[f"{name}.npy"] = b.getvalue()
    return _zip(files)


class _Hostile:
    """Unpickling this calls ``print('pwned')``: harmless, but proof that code would run."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned: this file ran code while being unpickled",))


def ckpt_files() -> dict[str, bytes]:
    return {
        "random.bin": np.random.RandomState(0).bytes(2048),
        "empty.pt": b"",
        "text.pt": b"this is a README, not a checkpoint\n" * 4,
        "garbage_pickle.pt": b"\x80\x02not a checkpoint at all" * 50,
        "not_torch.zip": _zip({"readme.txt": b"just a zip"}),
        "fake_torchscript.pt": _zip({"archive/constants.pkl": b"\x80\x02garbage",
                                     "archive/code/__torch__.py": b"def broken(:\n",
                                     "archive/data.pkl": b"not a pickle"}),
        "fake_export.pt2": _zip({"archive/archive_format": b"pt2",
                                 "archive/models/model.json": b"{not json",
                                 "archive/version": b"0"}),
        "hostile_pickle.pt": pickle.dumps(_Hostile(), protocol=2),
        "fake.onnx": b"definitely not protobuf" * 10,
    }


def data_files() -> dict[str, bytes]:
    rs = np.random.RandomState(0)
    x = rs.rand(6, 1, 8, 8).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((8, 8), np.float32), np.zeros((9, 9), np.float32)
    truncated = _npz(x=x, y=y)
    return {
        "ragged.npz": _npz(x=ragged, y=y[:2]),
        "empty.npz": _npz(x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros((0,), np.int64)),
        "no_labels.npz": _npz(x=x),
        "truncated.npz": truncated[: len(truncated) // 2],
        "labels_out_of_range.npz": _npz(x=x, y=np.array([0, 1, 12, 3, 4, 5])),
        "labels_negative.npz": _npz(x=x, y=np.array([0, 1, 2, -1, 4, 5])),
        "labels_float.npz": _npz(x=x, y=np.array([0.0, 1.0, 2.5, 3.0, 4.0, 5.0])),
        "labels_nan.npz": _npz(x=x, y=np.array([0.0, np.nan, 2.0, 3.0, 4.0, 5.0])),
        "labels_one_hot.npz": _npz(x=x, y=np.eye(10, dtype=np.float32)[y]),
        "labels_strings.npz": _npz(x=x, y=np.array(list("abcdef"))),
        "count_mismatch.npz": _npz(x=x, y=y[:4]),
        "x_nan.npz": _npz(x=np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32), y=y),
        "x_0_255.npz": _npz(x=(x * 255).astype(np.float32), y=y),
        "x_normalized.npz": _npz(x=(x - 0.5) / 0.25, y=y),
        "x_channel_last.npz": _npz(x=np.moveaxis(x, 1, 3).copy(), y=y),
        "x_wrong_size.npz": _npz(x=rs.rand(6, 1, 10, 10).astype(np.float32), y=y),
        "x_int64.npz": _npz(x=(x * 255).astype(np.int64), y=y),
        "labels_below_5.npz": _npz(x=x[:5], y=y[:5]),
        "not_data.txt": b"x,y\n0.1,3\n",
        "mixed_sizes/0/a.png": _png(8, 8, 40),
        "mixed_sizes/0/b.png": _png(8, 8, 90),
        "mixed_sizes/1/c.png": _png(12, 9, 200),
        "corrupt_image/0/ok.png": _png(8, 8, 40),
        "corrupt_image/1/broken.png": _png(8, 8, 90)[:30],
    }


def main() -> None:
    for folder, files in (("yaml", yaml_files()), ("ckpt", ckpt_files()), ("data", data_files())):
        for name, data in files.items():
            path = HERE / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"{HERE}: {total} bytes")


if __name__ == "__main__":
    main()
