"""Train the committed tabular sample models on the synthetic fraud table, deterministically.

    python sample_models/train_fraud.py       # after sample_models/make_fraud_data.py

Splits ``data/fraud.csv`` by row (every fourth row held out, 1,000 rows, about one fraud in
eleven like the whole table) and writes:

- ``data/fraud_test.csv``: the held-out rows, the audit's data (the models never saw them);
- ``fraud_mlp.pt``: a TorchScript MLP on the min-max-scaled features (what robaudit feeds a
  tabular model: the schema's bounds scale every feature to [0, 1]), trained with a 6:1 class
  weight for the 10:1 imbalance;
- ``fraud_gbdt.onnx``: scikit-learn's GradientBoostingClassifier on the same scaled
  features, exported with skl2onnx (probabilities as a plain tensor, no ZipMap): the deployed-
  fraud-model case, audited through onnxruntime at score access. Skipped, with a message,
  where skl2onnx is not installed (the ``onnx`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from robaudit.loading.tabular import read_tabular

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
HOLD_OUT_EVERY = 4  # row i is held out when i % 4 == 3
FRAUD_WEIGHT = 6.0  # the loss weight of a fraud: recall matters more than a few false alarms


class FraudMLP(nn.Module):
    """Two hidden layers of 64: small enough to train in seconds, large enough to fit."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices."""
    held = np.arange(n) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    return np.flatnonzero(~held), np.flatnonzero(held)


def train_mlp(x: np.ndarray, y: np.ndarray, epochs: int = 400, seed: int = 0) -> FraudMLP:
    """Full-batch Adam with a class weight: fraud recall matters more than a few false alarms."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = FraudMLP(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    weight = torch.tensor([1.0, FRAUD_WEIGHT])
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt, weight=weight).backward()
        opt.step()
    return model.eval()


def train_gbdt(x: np.ndarray, y: np.ndarray, out: Path) -> object | None:
    """The tree model, exported to ONNX (None where skl2onnx is missing)."""
    from sklearn.ensemble import GradientBoostingClassifier

    try:
        from skl2onnx import to_onnx
    except ImportError:
        print("skl2onnx is not installed (pip install -e '.[onnx]'): fraud_gbdt.onnx not written")
        return None
    weight = np.where(y == 1, FRAUD_WEIGHT, 1.0)
    gbdt = GradientBoostingClassifier(
        n_estimators=150, learning_rate=0.1, max_depth=3, random_state=0
    ).fit(x, y, sample_weight=weight)
    onx = to_onnx(gbdt, x[:1], options={id(gbdt): {"zipmap": False}}, target_opset=17)
    (out / "fraud_gbdt.onnx").write_bytes(onx.SerializeToString())
    return gbdt


def report(name: str, pred: np.ndarray, y: np.ndarray) -> None:
    """Clean accuracy and fraud recall on the held-out rows."""
    recall = float((pred[y == 1] == 1).mean())
    print(f"{name}: held-out accuracy {(pred == y).mean():.3f}, fraud recall {recall:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-for-bit the same weights on every machine
    csv, schema = DATA / "fraud.csv", DATA / "fraud.yaml"
    _, x, y = read_tabular(str(csv), "is_fraud", str(schema))
    tr, te = split(len(y))
    pd.read_csv(csv).iloc[te].to_csv(DATA / "fraud_test.csv", index=False)
    mlp = train_mlp(x[tr], y[tr])
    traced = torch.jit.trace(mlp, torch.from_numpy(x[:2]))
    traced.save(str(args.out / "fraud_mlp.pt"))
    with torch.no_grad():
        report("fraud_mlp", mlp(torch.from_numpy(x[te])).argmax(1).numpy(), y[te])
    gbdt = train_gbdt(x[tr], y[tr], args.out)
    if gbdt is not None:
        report("fraud_gbdt", np.asarray(gbdt.predict(x[te])), y[te])  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
