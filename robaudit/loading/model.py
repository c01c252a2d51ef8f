"""Model checkpoints: TorchScript, torch.export programs, state_dicts (+ arch), trusted pickles.

The format is detected from the file's content, not its name: a zip holding
``constants.pkl`` and ``code/`` is TorchScript, one holding ``models/`` and ``archive_format``
(or ``serialized_exported_program``) is a torch.export program, anything else goes to
``torch.load(weights_only=True)``. A whole pickled ``nn.Module`` is refused unless the user
passes ``--trust-model``, because unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import ModelLoadError
from robaudit.loading.onnx import load_onnx, looks_like_onnx

__all__ = ["LoadedModel", "build_arch", "load_model", "sha256_file"]

log = logging.getLogger(__name__)

_ARCH_EXAMPLE = (
    'e.g. model.arch: "robaudit.models.digits:DigitsCNN" (package.module:Class) '
    'or "torchvision.models.resnet18" with arch_kwargs {num_classes: 10}'
)
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_MAX_KEYS_LISTED = 5


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model plus what the report needs to identify it."""

    module: nn.Module  # in eval mode, on CPU
    path: str
    sha256: str  # of the checkpoint file bytes
    format: str  # "torchscript" | "state_dict" | "export" | "pickle" | "onnx"
    arch: str | None
    # the most an attacker gets from this file: ONNX runs give scores, never gradients
    max_access: str = "white-box"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large checkpoints do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_model: bool = False,
) -> LoadedModel:
    """Load a checkpoint onto the CPU in eval mode; every user mistake becomes a ModelLoadError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"model file '{p}' not found")
    if p.is_dir():
        raise ModelLoadError(
            f"model path '{p}' is a directory; give a checkpoint file "
            "(TorchScript .pt, torch.export .pt2, or a state_dict .pt/.pth)"
        )
    try:
        size = p.stat().st_size
        digest = sha256_file(p)
    except OSError as exc:
        raise ModelLoadError(f"model file '{p}' cannot be read: {_one_line(exc)}") from exc
    if size == 0:
        raise ModelLoadError(f"model file '{p}' is empty (0 bytes); was it saved completely?")

    if looks_like_onnx(p):
        return LoadedModel(load_onnx(p), str(p), digest, "onnx", None, max_access="score")
    kind = _sniff(p)
    if kind == "torchscript":
        module = _load_torchscript(p)
        return _done(module, p, digest, "torchscript", None)
    if kind == "export":
        module = _load_export(p)
        return _done(module, p, digest, "export", None)
    return _load_pickled(p, digest, arch, arch_kwargs, trust_model)


def _sniff(p: Path) -> str:
    """Classify by content: "torchscript", "export", or "torch.load" (state_dict/pickle/legacy)."""
    if not zipfile.is_zipfile(p):
        return "torch.load"
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "torch.load"  # torch.load then reports it as corrupt
    inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "constants.pkl" in inner and any(n.startswith("code/") for n in inner):
        return "torchscript"
    if (
        "archive_format" in inner
        or any(n.startswith("models/") and n.endswith(".json") for n in inner)
        or any("serialized_exported_program" in n for n in inner)
    ):
        return "export"
    return "torch.load"


def _load_torchscript(p: Path) -> nn.Module:
    """TorchScript stays first-class though torch.jit is deprecated: silence only that notice."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning
            )
            module: nn.Module = torch.jit.load(  # type: ignore[no-untyped-call,unused-ignore]
                str(p), map_location="cpu"
            )
    except Exception as exc:  # torch raises RuntimeError and friends for corrupt archives
        raise ModelLoadError(
            f"model file '{p}' looks like TorchScript but cannot be loaded: {_one_line(exc)}"
        ) from exc
    return module


class _ExportedModule(nn.Module):
    """Wraps ``ExportedProgram.module()``, whose own ``eval()`` raises NotImplementedError.

    The graph already runs in the mode it was exported in; this wrapper only lets the rest
    of robaudit call ``.eval()`` / ``.train()`` on every model alike.
    """

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.program = graph_module

    def train(self, mode: bool = True) -> _ExportedModule:
        """Record the mode without recursing into the graph module, which refuses it."""
        self.training = mode
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.program(*args, **kwargs)


def _load_export(p: Path) -> nn.Module:
    """``torch.export.load(...).module()``; warn when the graph was captured in training mode."""
    with _torch_log_captured("torch.export") as records:
        try:
            program = torch.export.load(str(p))
            gm = program.module()
        except Exception as exc:  # corrupt or version-incompatible archives raise many types
            # torch logs the real cause (with a traceback) and raises a "see the warnings
            # above" error: name the cause in our one line instead
            causes = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1]]
            raise ModelLoadError(
                f"model file '{p}' looks like a torch.export program but cannot be loaded: "
                f"{_one_line(causes[-1] if causes else exc)}"
            ) from exc
    if _exported_in_training_mode(gm):
        log.warning(
            "model file '%s' was exported in training mode (batch-norm batch statistics or "
            "active dropout); export it after model.eval() for a meaningful audit",
            p,
        )
    batch = _static_batch_size(gm)
    if batch is not None:
        log.warning(
            "model file '%s' was exported with a fixed batch size of %d, so other batch sizes "
            "fail; export with dynamic_shapes={'x': {0: torch.export.Dim('batch')}}",
            p,
            batch,
        )
    try:
        gm.eval()
        return gm
    except NotImplementedError:
        return _ExportedModule(gm)


@contextlib.contextmanager
def _torch_log_captured(name: str) -> Iterator[list[logging.LogRecord]]:
    """Keep torch's log records under ``name`` off stderr while loading; hand them to the caller."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(name)
    saved = (logger.handlers, logger.propagate)
    logger.handlers, logger.propagate = [_Keep()], False  # torch attaches its own handlers here
    try:
        yield records
    finally:
        logger.handlers, logger.propagate = saved


def _exported_in_training_mode(gm: nn.Module) -> bool:
    """True when the graph holds training-mode batch norm or dropout calls."""
    graph = getattr(gm, "graph", None)
    if graph is None:
        return False
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if target.startswith("aten.batch_norm") and len(node.args) > 5 and node.args[5] is True:
            return True
        if target.startswith("aten._native_batch_norm_legit_functional"):
            return True
        if target.startswith("aten.dropout") and len(node.args) > 2 and node.args[2] is True:
            return True
    return False


def _static_batch_size(gm: nn.Module) -> int | None:
    """The first input's batch size if the export fixed it (an int, not a symbol), else None."""
    graph = getattr(gm, "graph", None)
    for node in graph.nodes if graph is not None else ():
        if node.op == "placeholder":
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) > 0 and isinstance(shape[0], int):
                return int(shape[0])
            return None
    return None


def _load_pickled(
    p: Path, digest: str, arch: str | None, arch_kwargs: dict[str, Any] | None, trust_model: bool
) -> LoadedModel:
    """Safe ``weights_only`` load first; a full unpickle only with trust_model, only if needed."""
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        global_name = _disallowed_global(exc)
        if global_name is None:
            raise ModelLoadError(
                f"model file '{p}' is not a loadable checkpoint (corrupt, truncated, or not a "
                f"PyTorch file): {type(exc).__name__}: {_load_failure(exc)}"
            ) from exc
        if not trust_model:
            raise ModelLoadError(
                f"model file '{p}' contains pickled Python objects (it needs {global_name}), "
                "not only weights; unpickling runs arbitrary code from the file, so robaudit refuses it "
                "unless you pass --trust-model (only for files you trust) - better, save it as "
                "TorchScript, torch.export (.pt2) or a state_dict plus model.arch"
            ) from exc
        obj = _unsafe_load(p)
        if isinstance(obj, Mapping) and isinstance(obj.get("model"), nn.Module):
            obj = obj["model"]  # {"model": module, "optimizer": ...} training checkpoints
        if isinstance(obj, nn.Module):
            cls = type(obj)
            return _done(obj, p, digest, "pickle", f"{cls.__module__}:{cls.__qualname__}")
    if isinstance(obj, nn.Module):  # only reachable if torch allowlists a module class
        return _done(obj, p, digest, "pickle", arch)
    state = _extract_state_dict(obj, p)
    if arch is None:
        raise ModelLoadError(
            f"model file '{p}' holds only weights (a state_dict) and model.arch is needed to "
            f"build the network; {_ARCH_EXAMPLE}"
        )
    module = build_arch(arch, arch_kwargs)
    _load_state(module, state, p, arch)
    return _done(module, p, digest, "state_dict", arch)


def _load_failure(exc: BaseException) -> str:
    """The cause inside ``torch.load``'s error, without its advice about ``weights_only``
    (which would only mislead about a file that is not a checkpoint at all)."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    return _one_line(m.group(1) if m and m.group(1).strip() else text.split(" Re-running")[0])[:200]


def _disallowed_global(exc: BaseException) -> str | None:
    """The class name if weights_only refused a pickled global (a whole module), else None."""
    text = str(exc)
    if "Unsupported global" not in text and "not an allowed global" not in text:
        return None
    m = re.search(r"GLOBAL ([\w.]+)", text)
    return m.group(1) if m else "a Python class"


def _unsafe_load(p: Path) -> Any:
    """The full unpickler; the caller has checked trust_model."""
    try:
        return torch.load(str(p), map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise ModelLoadError(
            f"model file '{p}' is a pickled module whose class cannot be imported here "
            f"({_one_line(exc)}); make its module importable (PYTHONPATH) or save a state_dict"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"model file '{p}' cannot be unpickled: {_one_line(exc)}") from exc


def _extract_state_dict(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    """A flat name->tensor mapping, unwrapping {"state_dict": ...}-style training checkpoints."""
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _is_tensor_mapping(inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not _is_tensor_mapping(obj):
        what = type(obj).__name__
        if isinstance(obj, Mapping):
            what = f"dict with keys {list(obj)[:_MAX_KEYS_LISTED]}"
        raise ModelLoadError(
            f"model file '{p}' contains a {what}, not a model or a state_dict of tensors "
            f"(also accepted: {{'state_dict': ...}} or {{'model_state_dict': ...}})"
        )
    return {str(k): v for k, v in obj.items()}


def _is_tensor_mapping(m: Mapping[Any, Any]) -> bool:
    """String keys and at least one tensor value: what state_dict() produces."""
    return (
        len(m) > 0
        and all(isinstance(k, str) for k in m)
        and any(isinstance(v, torch.Tensor) for v in m.values())
    )


def build_arch(arch: str, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate ``package.module:Class`` (or a factory) or a torchvision model name."""
    kwargs = dict(arch_kwargs or {})
    if ":" in arch:
        mod_name, _, attr = arch.partition(":")
        if not mod_name or not attr:
            raise ModelLoadError(
                f"model.arch '{arch}' must look like package.module:Class; {_ARCH_EXAMPLE}"
            )
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # ImportError, or the user's module failing at import time
            raise ModelLoadError(
                f"model.arch '{arch}': cannot import module '{mod_name}' ({_one_line(exc)}); "
                "is it installed or on PYTHONPATH?"
            ) from exc
        target: Any = mod
        for part in attr.split("."):
            if not hasattr(target, part):
                raise ModelLoadError(
                    f"model.arch '{arch}': module '{mod_name}' has no attribute '{attr}'"
                )
            target = getattr(target, part)
        if not callable(target):
            raise ModelLoadError(
                f"model.arch '{arch}' is not a class or function that builds a model"
            )
        try:
            module = target(**kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"model.arch '{arch}' could not be built with arch_kwargs {kwargs}: "
                f"{_one_line(exc)}"
            ) from exc
    else:
        module = _torchvision_model(arch, kwargs)
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"model.arch '{arch}' built a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def _torchvision_model(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """``resnet18`` or ``torchvision.models.resnet18`` built with ``weights=None`` (no download)."""
    name = arch.removeprefix("torchvision.models.")
    try:
        import torchvision.models as tvm

        known = set(tvm.list_models(module=tvm))
    except Exception as exc:  # pragma: no cover - torchvision is a dependency
        raise ModelLoadError(
            f"model.arch '{arch}': torchvision is not usable ({_one_line(exc)})"
        ) from exc
    if name not in known:
        raise ModelLoadError(
            f"model.arch '{arch}' is neither package.module:Class nor a torchvision classification "
            f"model name; {_ARCH_EXAMPLE}"
        )
    kwargs.setdefault("weights", None)
    if kwargs["weights"] is not None:
        raise ModelLoadError(
            f"model.arch '{arch}': arch_kwargs.weights must be left unset; the weights come from "
            "the checkpoint file"
        )
    try:
        model: nn.Module = tvm.get_model(name, **kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"model.arch '{arch}' could not be built with arch_kwargs {kwargs}: {_one_line(exc)}"
        ) from exc
    return model


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], p: Path, arch: str) -> None:
    """strict load with our own key diff, so the error lists names instead of a wall of text."""
    expected = set(module.state_dict().keys())
    state = _strip_wrapper_prefix(state, expected)
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys {_first(unexpected)}")
        raise ModelLoadError(
            f"model file '{p}' does not match model.arch '{arch}': {'; '.join(parts)}; "
            "check model.arch and arch_kwargs (e.g. num_classes)"
        )
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # shape mismatches
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        detail = "; ".join(lines[:3]) if lines else _one_line(exc)
        raise ModelLoadError(
            f"model file '{p}' does not fit model.arch '{arch}': {_one_line(detail)}; "
            "check arch_kwargs (e.g. num_classes, width)"
        ) from exc


def _strip_wrapper_prefix(
    state: dict[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key."""
    for prefix in ("module.", "_orig_mod."):
        if (
            state
            and all(k.startswith(prefix) for k in state)
            and not any(k.startswith(prefix) for k in expected)
        ):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_LISTED])
    more = f", ... (+{len(keys) - _MAX_KEYS_LISTED})" if len(keys) > _MAX_KEYS_LISTED else ""
    return f"[{shown}{more}]"


def _done(module: nn.Module, p: Path, digest: str, fmt: str, arch: str | None) -> LoadedModel:
    """Eval mode always; parameters keep requires_grad so white-box attacks get gradients."""
    module.eval()
    return LoadedModel(module=module, path=str(p), sha256=digest, format=fmt, arch=arch)


def _one_line(exc: BaseException | str) -> str:
    """Collapse an underlying message to one short line for our own one-line errors."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)  # c10's source location
    text = text.replace(
        " (Could this error message be improved? If so, please report an enhancement request "
        "to PyTorch.)", ""
    )
    return text if len(text) <= 300 else text[:297] + "..."
