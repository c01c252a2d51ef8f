"""Train the committed digits sample models, deterministically on CPU in well under two minutes.

    python sample_models/train.py            # or: make sample-models

Writes, for each of ``digits_cnn`` (plain) and ``digits_cnn_robust`` (PGD adversarial training,
Madry et al. 2018, Linf eps 0.2): ``NAME.pt`` (TorchScript, traced), ``NAME.pt2`` (torch.export
program), ``NAME.state_dict.pt`` (weights for ``arch: robaudit.models.digits:DigitsCNN``) and
``NAME.onnx`` (for query-only audits through onnxruntime).
Only the ``train`` split of ``builtin:digits`` is used; the ``test`` split is never seen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat

HERE = Path(__file__).resolve().parent


def train(adversarial: bool, epochs: int, seed: int = 0) -> DigitsCNN:
    """Plain or PGD-adversarial training with Adam; the robust twin warms up on clean data."""
    torch.manual_seed(seed)
    xs, ys = digits_arrays("train")
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    attack = PGD(PGDParams(steps=7, rel_step_size=0.35, early_stop=False))
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        # ramp eps up over the first third of training: stabler than full eps from the start
        eps = 0.2 * min(1.0, (epoch + 1) / max(1, epochs // 3))
        for i in range(0, x.shape[0], 64):
            b = perm[i : i + 64]
            xb, yb = x[b], y[b]
            if adversarial:
                clf = Classifier(model, num_classes=10)
                xb = attack.run(clf, xb, yb, Threat("linf", eps), gen).x_adv
                model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save(model: DigitsCNN, name: str, out: Path) -> None:
    """TorchScript by tracing (loads without the source), a torch.export program, and weights."""
    example = torch.zeros(2, 1, 8, 8)
    traced = torch.jit.trace(model, example)
    traced.save(str(out / f"{name}.pt"))
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(out / f"{name}.pt2"))
    torch.save(model.state_dict(), out / f"{name}.state_dict.pt")
    save_onnx(model, name, out)


def save_onnx(model: DigitsCNN, name: str, out: Path) -> None:
    """An ONNX file with a dynamic batch (needs the dev extra's onnx + onnxscript), one file."""
    example = torch.zeros(2, 1, 8, 8)
    torch.onnx.export(
        model.eval(),
        (example,),
        str(out / f"{name}.onnx"),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        external_data=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument(
        "--onnx-only", action="store_true", help="only re-export NAME.onnx from NAME.state_dict.pt"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.onnx_only:
        for name in ("digits_cnn", "digits_cnn_robust"):
            model = DigitsCNN()
            model.load_state_dict(torch.load(HERE / f"{name}.state_dict.pt", weights_only=True))
            save_onnx(model.eval(), name, args.out)
        return
    torch.set_num_threads(2)
    xt, yt = (torch.from_numpy(a) for a in digits_arrays("test"))
    for name, adv in (("digits_cnn", False), ("digits_cnn_robust", True)):
        t0 = time.perf_counter()
        model = train(adv, args.epochs)
        acc = (model(xt).argmax(1) == yt).float().mean().item()
        save(model, name, args.out)
        print(f"{name}: clean test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
