"""Model loader: each format gives the original outputs; each mistake is a ModelLoadError."""

from __future__ import annotations

import hashlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from robaudit.errors import ModelLoadError
from robaudit.loading import LoadedModel, build_arch, load_model, sha256_file
from robaudit.models.digits import DigitsCNN

# torch 2.14 deprecates torch.jit; the tests still write TorchScript files, as users do.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.*deprecated:FutureWarning")

DIGITS_ARCH = "robaudit.models.digits:DigitsCNN"


@pytest.fixture
def digits() -> nn.Module:
    torch.manual_seed(0)
    return DigitsCNN().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _trace(m: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript the way most users still produce it."""
    traced: torch.jit.ScriptModule = torch.jit.trace(m, x)  # type: ignore[no-untyped-call,unused-ignore]
    return traced


def _same_outputs(loaded: LoadedModel, original: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), original(x), rtol=1e-5, atol=1e-6)


def _check_common(loaded: LoadedModel, path: Path, fmt: str) -> None:
    assert loaded.format == fmt
    assert loaded.path == str(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.module.training is False


# ---------------------------------------------------------------- formats


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"robaudit" * 300_000)  # spans several read chunks
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_torchscript(tmp_path: Path, digits: nn.Module, x: torch.Tensor) -> None:
    path = tmp_path / "model.pt"
    torch.jit.save(_trace(digits, x), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader must not leak torch.jit's deprecation notice
        loaded = load_model(path, arch=DIGITS_ARCH)
    _check_common(loaded, path, "torchscript")
    assert loaded.arch is None  # arch is not used for TorchScript
    _same_outputs(loaded, digits, x)


def test_format_detected_by_content_not_extension(
    tmp_path: Path, digits: nn.Module, x: torch.Tensor
) -> None:
    ts = tmp_path / "looks_like_weights.pth"
    torch.jit.save(_trace(digits, x), str(ts))
    assert load_model(ts).format == "torchscript"
    ep = tmp_path / "exported.bin"
    torch.export.save(torch.export.export(digits, (x,)), str(ep))
    assert load_model(ep).format == "export"
    sd = tmp_path / "weights.pt2"
    torch.save(digits.state_dict(), sd)
    assert load_model(sd, arch=DIGITS_ARCH).format == "state_dict"


def test_export(
    tmp_path: Path, digits: nn.Module, x: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "model.pt2"
    dynamic = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(digits, (x,), dynamic_shapes=dynamic), str(path))
    with caplog.at_level("WARNING", logger="robaudit.loading.model"):
        loaded = load_model(path)
    assert not [r for r in caplog.records if r.name == "robaudit.loading.model"]
    _check_common(loaded, path, "export")
    _same_outputs(loaded, digits, x)
    loaded.module.eval()  # exported graph modules refuse eval(); the loader's must not
    loaded.module.train(False)
    _same_outputs(loaded, digits, x[:2])


def test_export_with_fixed_batch_warns(
    tmp_path: Path, digits: nn.Module, x: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(digits, (x,)), str(path))
    with caplog.at_level("WARNING", logger="robaudit.loading.model"):
        loaded = load_model(path)
    assert "fixed batch size of 4" in caplog.text
    _same_outputs(loaded, digits, x)


def test_export_in_training_mode_warns(
    tmp_path: Path, x: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4)).train()
    path = tmp_path / "train_mode.pt2"
    torch.export.save(torch.export.export(m, (x,)), str(path))
    with caplog.at_level("WARNING", logger="robaudit.loading.model"):
        load_model(path)
    assert "training mode" in caplog.text


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict"])
def test_state_dict(
    tmp_path: Path, digits: nn.Module, x: torch.Tensor, wrapper: str | None
) -> None:
    path = tmp_path / "weights.pt"
    sd = digits.state_dict()
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, path)
    loaded = load_model(path, arch=DIGITS_ARCH)
    _check_common(loaded, path, "state_dict")
    assert loaded.arch == DIGITS_ARCH
    assert isinstance(loaded.module, DigitsCNN)
    _same_outputs(loaded, digits, x)


def test_state_dict_with_arch_kwargs_and_dataparallel_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = DigitsCNN(num_classes=3, width=4).eval()
    path = tmp_path / "w.pt"
    torch.save({f"module.{k}": v for k, v in m.state_dict().items()}, path)
    loaded = load_model(path, arch=DIGITS_ARCH, arch_kwargs={"num_classes": 3, "width": 4})
    x = torch.rand(2, 1, 8, 8)
    _same_outputs(loaded, m, x)


def test_loaded_module_is_eval_and_keeps_gradients(tmp_path: Path) -> None:
    m = DigitsCNN().train()
    path = tmp_path / "w.pt"
    torch.save(m.state_dict(), path)
    loaded = load_model(path, arch=DIGITS_ARCH)
    assert not any(mod.training for mod in loaded.module.modules())
    assert all(p.requires_grad for p in loaded.module.parameters())
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())


def test_torchvision_arch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from torchvision.models import squeezenet1_1

    m = squeezenet1_1(weights=None, num_classes=5).eval()
    path = tmp_path / "sq.pt"
    torch.save(m.state_dict(), path)
    loaded = load_model(path, arch="squeezenet1_1", arch_kwargs={"num_classes": 5})
    _same_outputs(loaded, m, torch.rand(1, 3, 64, 64))
    assert isinstance(build_arch("torchvision.models.squeezenet1_1"), nn.Module)


def test_pickled_module_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path)
    with pytest.raises(ModelLoadError, match=r"whole\.pt.*pickled.*--trust-model"):
        load_model(path)


def test_pickled_module_with_trust(tmp_path: Path, x: torch.Tensor) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.5)).train()
    path = tmp_path / "whole.pt"
    torch.save(m, path)
    loaded = load_model(path, trust_model=True)
    _check_common(loaded, path, "pickle")
    assert loaded.arch == "torch.nn.modules.container:Sequential"
    _same_outputs(loaded, m.eval(), x)
    torch.save({"model": m, "epoch": 3}, path)
    assert load_model(path, trust_model=True).format == "pickle"


def test_trusted_pickle_of_unimportable_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pickle only names its class; if the class's module is gone, say so instead of crashing."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "gone_mod.py").write_text(
        textwrap.dedent(
            """
            import torch
            class Net(torch.nn.Module):
                def forward(self, x):
                    return x
            """
        )
    )
    monkeypatch.syspath_prepend(str(pkg))
    import gone_mod

    path = tmp_path / "whole.pt"
    torch.save(gone_mod.Net(), path)
    monkeypatch.delitem(sys.modules, "gone_mod")
    (pkg / "gone_mod.py").unlink()
    with pytest.raises(ModelLoadError, match=r"whole\.pt.*cannot be imported"):
        load_model(path, trust_model=True)


# ---------------------------------------------------------------- errors


def test_state_dict_without_arch(tmp_path: Path, digits: nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(digits.state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"w\.pt.*model\.arch.*robaudit\.models\.digits"):
        load_model(path)


def test_state_dict_key_mismatch_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)).state_dict(), path)
    with pytest.raises(
        ModelLoadError, match=r"w\.pt.*missing keys \[classifier.*unexpected.*0\.bias"
    ):
        load_model(path, arch=DIGITS_ARCH)


def test_state_dict_shape_mismatch(tmp_path: Path, digits: nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(digits.state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"w\.pt.*size mismatch.*num_classes"):
        load_model(path, arch=DIGITS_ARCH, arch_kwargs={"num_classes": 3})


@pytest.mark.parametrize(
    ("arch", "pattern"),
    [
        ("notamodel", "'notamodel' is neither package.module:Class nor a torchvision"),
        ("no_such_pkg_xyz.mod:Net", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("robaudit.models.digits:Nope", "has no attribute 'Nope'"),
        ("robaudit.models.digits:torch", "not a class or function"),
        ("collections:OrderedDict", "built a OrderedDict, not a torch.nn.Module"),
        (":DigitsCNN", "must look like package.module:Class"),
    ],
)
def test_bad_arch(tmp_path: Path, digits: nn.Module, arch: str, pattern: str) -> None:
    path = tmp_path / "w.pt"
    torch.save(digits.state_dict(), path)
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(path, arch=arch)


def test_bad_arch_kwargs() -> None:
    with pytest.raises(ModelLoadError, match=r"DigitsCNN.*arch_kwargs \{'depth': 3\}"):
        build_arch(DIGITS_ARCH, {"depth": 3})
    with pytest.raises(ModelLoadError, match=r"weights must be left unset"):
        build_arch("resnet18", {"weights": "IMAGENET1K_V1"})


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nope\.pt' not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ModelLoadError, match=r"is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(ModelLoadError, match=r"empty\.pt.*empty"):
        load_model(path)


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "export"])
def test_truncated_files(tmp_path: Path, digits: nn.Module, x: torch.Tensor, kind: str) -> None:
    full = tmp_path / f"full_{kind}"
    if kind == "state_dict":
        torch.save(digits.state_dict(), full)
    elif kind == "torchscript":
        torch.jit.save(_trace(digits, x), str(full))
    else:
        torch.export.save(torch.export.export(digits, (x,)), str(full))
    data = full.read_bytes()
    cut = tmp_path / f"cut_{kind}.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=f"cut_{kind}"):
        load_model(cut, arch=DIGITS_ARCH)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ModelLoadError, match=r"junk\.pt.*not a loadable checkpoint"):
        load_model(path)


def test_checkpoint_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ModelLoadError, match=r"t\.pt.*contains a Tensor"):
        load_model(path, arch=DIGITS_ARCH)
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ModelLoadError, match=r"dict with keys \['epoch', 'lr'\]"):
        load_model(path, arch=DIGITS_ARCH)
