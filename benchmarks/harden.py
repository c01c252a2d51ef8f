"""`robaudit harden` on the plain digits sample model: each method timed in one run, side by
side, with clean and PGD-50 robust accuracy at Linf eps 0.2 before and after.

    .venv/bin/python benchmarks/harden.py [--methods pgd-at,trades,fast-at,distill] [--threads 2]

Training uses each method's defaults (``robaudit.harden.options.METHOD_DEFAULTS``) at Linf
eps 0.2 on the digits ``train`` split; the evaluation is robaudit's own audit of the 500
``test`` images with PGD-50 (step 0.1 * eps, one random start) under cross-entropy and under
the C&W margin loss, every break verified, integrity checks on. Targets (issue 7):

- pgd-at and trades raise PGD-50 robust accuracy by >= 30 points, clean accuracy drops <= 5;
- fast-at reaches >= 80% of pgd-at's robust gain in less time;
- distill raises robust accuracy under PGD-CE but not under the margin loss, and the
  integrity checks flag it (gradient masking: RA003 / RA009 / RA010).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import robaudit
from robaudit.harden import HardenOptions

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "digits_cnn.pt"
EPS = 0.2
CONFIG: dict[str, Any] = {
    "model": {"input_shape": [1, 8, 8], "num_classes": 10},
    "data": {"source": "builtin:digits", "split": "test"},
    "attacks": [
        {"name": "pgd", "norm": "linf", "eps": [EPS], "steps": 50, "rel_step_size": 0.1,
         "loss": "ce"},
        {"name": "pgd", "norm": "linf", "eps": [EPS], "steps": 50, "rel_step_size": 0.1,
         "loss": "margin"},
    ],
    "report": {"examples": 0},
    "engine": {"device": "cpu", "cascade": False},
}


def evaluate(model: Path) -> dict[str, Any]:
    """Clean, PGD-50 CE, PGD-50 margin and worst-case robust accuracy, and the findings."""
    report = robaudit.scan(model, config=CONFIG)
    doc = report.to_dict()
    by_loss = {a["params"]["loss"]: a["robust_accuracy"] for a in doc["attacks"] if a["attack_index"] < 2}
    return {
        "clean": report.clean_accuracy,
        "ce": by_loss["ce"],
        "margin": by_loss["margin"],
        "worst": float(report.robust_accuracy("linf", EPS)),
        "findings": sorted({f["id"] for f in doc["findings"]}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="pgd-at,trades,fast-at,distill")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"plain digits CNN, Linf eps {EPS}, torch {torch.__version__}, {args.threads} threads")
    before = evaluate(MODEL)
    print(
        f"original: clean {before['clean']:.3f}, PGD-50 CE {before['ce']:.3f}, PGD-50 margin "
        f"{before['margin']:.3f}, worst case {before['worst']:.3f}, findings "
        f"{', '.join(before['findings']) or 'none'}"
    )
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            opts = HardenOptions(method=method, eps=EPS, norm="linf")
            t0 = time.perf_counter()
            result = robaudit.harden_model(
                MODEL, config=CONFIG, out=Path(tmp) / method, options=opts, audit=False,
                device="cpu",
            )
            seconds = time.perf_counter() - t0
            after = evaluate(result.files["torchscript"])
            rows[method] = {**after, "seconds": seconds, "epochs": len(result.training.records),
                            "best": result.training.best_epoch}
            print(
                f"{method:8s} {len(result.training.records):3d} epochs (kept {result.training.best_epoch}) "
                f"{seconds:6.1f} s | clean {before['clean']:.3f} -> {after['clean']:.3f} "
                f"({100 * (after['clean'] - before['clean']):+.1f}) | PGD-50 CE {before['ce']:.3f} -> "
                f"{after['ce']:.3f} ({100 * (after['ce'] - before['ce']):+.1f}) | margin "
                f"{before['margin']:.3f} -> {after['margin']:.3f} "
                f"({100 * (after['margin'] - before['margin']):+.1f}) | worst {after['worst']:.3f} | "
                f"findings {', '.join(after['findings']) or 'none'}",
                flush=True,
            )
    print()
    for method in ("pgd-at", "trades"):
        if method in rows:
            r = rows[method]
            gain, drop = 100 * (r["ce"] - before["ce"]), 100 * (before["clean"] - r["clean"])
            ok = gain >= 30 and drop <= 5
            print(f"{method}: PGD-50 gain {gain:+.1f} points (>= 30), clean drop {drop:.1f} (<= 5): "
                  f"{'met' if ok else 'NOT met'}")
    if "pgd-at" in rows and "fast-at" in rows:
        g_pgd = rows["pgd-at"]["ce"] - before["ce"]
        g_fast = rows["fast-at"]["ce"] - before["ce"]
        frac = g_fast / g_pgd if g_pgd > 0 else float("nan")
        ratio = rows["fast-at"]["seconds"] / rows["pgd-at"]["seconds"]
        ok = frac >= 0.8 and ratio < 1
        print(f"fast-at: {frac:.0%} of pgd-at's PGD-50 gain (>= 80%) in {ratio:.2f}x its time (< 1): "
              f"{'met' if ok else 'NOT met'}")
    if "distill" in rows:
        r = rows["distill"]
        ce_up = r["ce"] - before["ce"]
        mg_up = r["margin"] - before["margin"]
        flagged = [f for f in r["findings"] if f in ("RA003", "RA009", "RA010")]
        ok = ce_up > 0.2 and mg_up < 0.05 and bool(flagged)
        print(f"distill: PGD-CE {100 * ce_up:+.1f} points, margin {100 * mg_up:+.1f} points, "
              f"masking findings {', '.join(flagged) or 'none'}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
