"""Epoch checkpoints for ``robaudit harden --resume``: the weights, the optimizer, all three
generator states and the loop's own state, so a resumed run ends as an uninterrupted one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import UserInputError
from robaudit.harden.export import atomic_torch_save
from robaudit.harden.records import EpochRecord

CHECKPOINT_FORMAT = "robaudit-harden-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the weights and the optimizer."""

    epoch: int = 0  # finished epochs
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_key: tuple[float, float] = (-1.0, -1.0)
    best_weights: dict[str, torch.Tensor] | None = None
    best_robust_seen: float = -1.0
    stale: int = 0
    stopped: str | None = None
    catastrophic_epoch: int | None = None
    elapsed: float = 0.0


def clone_weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of a state dict (training goes on changing the original tensors)."""
    return {k: v.detach().clone() for k, v in sd.items()}



def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """Epoch checkpoints in the folder, oldest first."""
    return sorted(ckpt_dir.glob("epoch-*.pt")) if ckpt_dir.is_dir() else []


def load_checkpoint(ckpt_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The last epoch checkpoint; it must come from a run with the same settings and model."""
    files = checkpoint_files(ckpt_dir)
    if not files:
        raise UserInputError(f"--resume: no epoch checkpoint in {ckpt_dir}; run without --resume")
    path = files[-1]
    try:
        ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(f"--resume: {path} cannot be read ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"--resume: {path} is not a robaudit harden checkpoint")
    mine, theirs = fingerprint, ck.get("fingerprint", {})
    for part in ("identity", "options"):
        a, b = mine.get(part, {}), theirs.get(part, {})
        for k in dict.fromkeys([*a, *b]):  # field order: --method first
            if a.get(k) != b.get(k):
                flag = k if part == "identity" else "--" + k.replace("_", "-")
                raise UserInputError(
                    f"--resume: the checkpoint in {ckpt_dir} was made with {flag} "
                    f"{b.get(k)!r}, this run has {a.get(k)!r}; use the same settings or another --out"
                )
    return ck


def save_checkpoint(
    ckpt_dir: Path,
    fingerprint: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_gen: torch.Generator,
    attack_gen: torch.Generator,
    state: TrainState,
    initial: dict[str, torch.Tensor] | None,
    teacher: nn.Module | None,
) -> None:
    """Write this epoch's checkpoint atomically, then drop the older ones; ``teacher`` is the
    distillation teacher's bare model (its weights are saved)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    teacher_sd = clone_weights(teacher.state_dict()) if teacher is not None else None
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "model": clone_weights(module.state_dict()),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "data": data_gen.get_state(),
            "attack": attack_gen.get_state(),
            "torch": torch.get_rng_state(),
        },
        "initial": initial,
        "teacher": teacher_sd,
        "state": state_to_dict(state),
    }
    path = ckpt_dir / f"epoch-{state.epoch:04d}.pt"
    atomic_torch_save(payload, path)
    for old in checkpoint_files(ckpt_dir):
        if old != path:
            old.unlink(missing_ok=True)


def state_to_dict(s: TrainState) -> dict[str, Any]:
    return {
        "epoch": s.epoch,
        "records": [asdict(r) for r in s.records],
        "best_epoch": s.best_epoch,
        "best_key": list(s.best_key),
        "best_weights": s.best_weights,
        "best_robust_seen": s.best_robust_seen,
        "stale": s.stale,
        "stopped": s.stopped,
        "catastrophic_epoch": s.catastrophic_epoch,
        "elapsed": s.elapsed,
    }


def state_from_dict(d: dict[str, Any]) -> TrainState:
    return TrainState(
        epoch=int(d["epoch"]),
        records=[EpochRecord(**r) for r in d["records"]],
        best_epoch=int(d["best_epoch"]),
        best_key=(float(d["best_key"][0]), float(d["best_key"][1])),
        best_weights=d["best_weights"],
        best_robust_seen=float(d["best_robust_seen"]),
        stale=int(d["stale"]),
        stopped=d["stopped"],
        catastrophic_epoch=d["catastrophic_epoch"],
        elapsed=float(d["elapsed"]),
    )


