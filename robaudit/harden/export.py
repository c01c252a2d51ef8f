"""Writing the hardened model: TorchScript (``model.pt``, traced, loads without the source),
a ``torch.export`` program (``model.pt2``) and the weights (``state_dict.pt``), each written
to a temporary file in the same folder and renamed, so a crash never leaves a truncated file.

A model that cannot be exported (``torch.export`` refuses some graphs) is skipped with a note
rather than failing the run: the TorchScript file and the weights are the primary outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import RuntimeFailure
from robaudit.loading.model import _ExportedModule
from robaudit.report.writers import atomic_write_text, create_temp_file

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text", "save_model"]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto it only if the block succeeds."""
    # the temporary name keeps the suffix: torch.export warns about archives not named .pt2
    # created 0666 less the umask (not mkstemp's 0600): a model file is for sharing
    fd, tmp = create_temp_file(path, suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(
    module: nn.Module, out: Path, input_shape: tuple[int, ...]
) -> tuple[dict[str, Path], list[str]]:
    """Write ``model.pt``, ``model.pt2`` and ``state_dict.pt`` into ``out``.

    Returns the files written and notes (e.g. why ``model.pt2`` was skipped).
    """
    module = module.eval().cpu()
    example = torch.zeros(2, *input_shape)
    written: dict[str, Path] = {}
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*already a ScriptModule.*")
        if isinstance(module, torch.jit.ScriptModule):
            scripted: Any = module  # already TorchScript: its parameters were trained in place
        else:
            try:
                with torch.no_grad():
                    scripted = torch.jit.trace(module, example)
            except Exception as exc:  # tracing fails on some dynamic models
                first = (str(exc).splitlines() or [""])[0][:200]
                raise RuntimeFailure(
                    f"the hardened model cannot be traced to TorchScript for model.pt "
                    f"({type(exc).__name__}: {first}); its weights are in the checkpoints"
                ) from None
        path = out / "model.pt"
        with atomic_path(path) as tmp:
            scripted.save(str(tmp))
        written["torchscript"] = path
        program, why = _export_program(module, example)
    if program is not None:
        path = out / "model.pt2"
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp))
        written["export"] = path
    else:
        notes.append(f"model.pt2 not written: torch.export failed for this model ({why})")
    path = out / "state_dict.pt"
    # a loaded .pt2 program sits in a thin wrapper: save the program's own parameter names
    weights = module.program if isinstance(module, _ExportedModule) else module
    atomic_torch_save({k: v.detach().cpu() for k, v in weights.state_dict().items()}, path)
    written["state_dict"] = path
    return written, notes


def _export_program(module: nn.Module, example: torch.Tensor) -> tuple[Any, str]:
    """A torch.export program with a dynamic batch, or (None, why not).

    TorchScript modules go through torch's TorchScript-to-ExportedProgram converter.
    """
    dynamic = ({0: torch.export.Dim("batch")},)
    quiet = logging.getLogger("torch._export")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the converter logs every specialised dimension
    try:
        if isinstance(module, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            program = TS2EPConverter(module, (example,)).convert()
        else:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
        # the program must answer other batch sizes too
        program.module()(torch.zeros(3, *example.shape[1:]))
    except Exception as exc:  # torch.export raises many types for unsupported graphs
        first = (str(exc).splitlines() or [""])[0][:200]
        return None, f"{type(exc).__name__}: {first}"
    finally:
        quiet.setLevel(level)
    return program, ""
