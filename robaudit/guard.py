"""The user's model leaves an audit exactly as it came in: same tensors, same mode.

An audit runs the model in eval mode whatever mode it was handed (a torchvision model is in
training mode after construction, and one forward pass there updates BatchNorm's running
statistics). :func:`untouched` digests every parameter and buffer before and after, puts the
model in eval mode for the audit, restores the caller's mode, and raises a runtime failure
naming the tensors if any changed. :func:`train_eval_gap` measures, on a copy, how much the
model's outputs differ between the two modes, for the finding that says so.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from robaudit.errors import RuntimeFailure


def tensor_digests(module: nn.Module) -> dict[str, str]:
    """SHA-256 of each parameter and buffer (name -> digest of dtype, shape and bytes)."""
    out: dict[str, str] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, t in named:
        data = t.detach()
        h = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
        flat = data.cpu().contiguous().reshape(-1)
        try:
            h.update(flat.view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # quantized or exotic dtypes
            h.update(repr(flat.tolist()).encode())
        out[name] = h.hexdigest()
    return out


@contextmanager
def untouched(module: nn.Module, what: str = "the model") -> Iterator[bool]:
    """Run the block with ``module`` in eval mode; restore its mode; fail if a tensor changed.

    Yields whether the module was in training mode when handed over.
    """
    was_training = module.training
    modes = {name: m.training for name, m in module.named_modules()}
    before = tensor_digests(module)
    module.eval()
    failed = False
    try:
        yield was_training
    except BaseException:
        failed = True
        raise
    finally:
        for name, m in module.named_modules():
            if name in modes:
                m.train(modes[name])
        after = tensor_digests(module)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed and not failed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise RuntimeFailure(
                f"the audit changed {len(changed)} tensor(s) of {what}: {shown}; robaudit never "
                "trains or updates a model, so this is a bug (or the model changes itself in "
                "forward): please report it"
            )


def train_eval_gap(module: nn.Module, probe: torch.Tensor) -> float:
    """Largest logit difference between training and eval mode on ``probe``, on a copy
    (a training-mode pass would update the original's BatchNorm statistics)."""
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.eval()
        ev = twin(probe)
        twin.train()
        tr = twin(probe)
    if not (isinstance(ev, torch.Tensor) and isinstance(tr, torch.Tensor)) or ev.shape != tr.shape:
        return float("inf")
    return float((ev - tr).abs().max())
