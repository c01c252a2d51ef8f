"""The audit's ``certify:`` section: certify every sample, then check the certificates
against an adaptive attack on the smoothed classifier."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from robaudit.certify.monte_carlo import certify, robust_under_attack
from robaudit.certify.soft import smoothed_classifier
from robaudit.classifier import Classifier
from robaudit.loading.samples import Images
from robaudit.results import wilson_interval
from robaudit.smoothing import SmoothingParams


def run_certification(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    section: Any,
    seed: int,
) -> dict[str, Any]:
    """CERTIFY every sample, then attack the smoothed classifier at each radius > 0.

    ``section`` is the config's ``certify:`` (SmoothingParams plus attack settings). The
    attack is PGD-L2 on the soft smoothed model (Salman et al. 2019), judged by PREDICT with
    ``attack_n`` draws: the share it leaves robust at radius r must not be below the certified
    accuracy at r (beyond the 2·alpha failure rate), or the certificate is unsound.
    """
    from robaudit.attacks.fgsm_pgd import PGD, PGDParams
    from robaudit.threat import Threat

    params = SmoothingParams(**{k: getattr(section, k) for k in SmoothingParams.model_fields})
    gen = torch.Generator().manual_seed(seed)
    cert = certify(clf, x, y, params, gen)
    out = cert.summary()
    empirical = []
    steps = int(getattr(section, "attack_steps", 0))
    n = cert.samples
    judge = params.model_copy(update={"n": int(getattr(section, "attack_n", params.n))})
    if steps > 0 and n and clf.access == "white-box":
        sclf = smoothed_classifier(clf, params.sigma, int(section.attack_draws), seed=seed)
        idx = cert.correct.nonzero().flatten()
        for r in params.radii:
            if r <= 0 or idx.numel() == 0:
                continue
            t0 = time.perf_counter()
            pgd = PGD(PGDParams(steps=steps, loss="ce", early_stop=False))
            xs, ys = x[idx].to(clf.device), y[idx].to(clf.device)
            gen_r = torch.Generator().manual_seed(seed + 1)
            xa = pgd.run(sclf, xs, ys, Threat("l2", float(r)), gen_r).x_adv
            robust = robust_under_attack(clf, cert.select(idx), xa, judge, gen_r)
            k = int(robust.sum())
            certified = cert.certified_count(r)
            # failures are allowed at rate 2 alpha per sample (a wrong certificate or PREDICT)
            slack = math.ceil(2 * params.alpha * n + 3 * math.sqrt(2 * params.alpha * n)) + 1
            empirical.append(
                {
                    "radius": float(r),
                    "robust": k,
                    "accuracy": k / n,
                    "ci95": list(wilson_interval(k, n)),
                    "certified": certified,
                    "consistent": certified <= k + slack,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )
    out["empirical"] = empirical
    out["attack"] = {
        "name": "pgd",
        "norm": "l2",
        "steps": steps,
        "draws": int(getattr(section, "attack_draws", 0)),
        "judge_n": judge.n,
    }
    return out
