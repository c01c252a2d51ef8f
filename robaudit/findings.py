"""The catalogue of findings: stable IDs (never reused), severities and their documentation.

Each finding says when it is raised, why it matters and what to do; ``robaudit explain ID``
prints it and the report links to it. Based on Carlini et al. 2019 ("On Evaluating
Adversarial Robustness") and Pintor et al. 2022 ("Indicators of Attack Failure").
"""

from __future__ import annotations

from dataclasses import dataclass

from robaudit.results import Finding


@dataclass(frozen=True)
class FindingDoc:
    id: str
    severity: str  # "info" | "warning" | "error"
    title: str
    raised_if: str
    why: str
    what_to_do: str


CATALOG: dict[str, FindingDoc] = {
    d.id: d
    for d in (
        FindingDoc(
            "RA001", "error", "Clean accuracy near chance",
            "clean accuracy is below min(50%, 2 x chance) on the evaluated samples",
            "a model that does not work on clean data usually means wrong preprocessing (mean/std, "
            "bounds, channel order) or wrong labels; robust accuracy of such a model means nothing",
            "check model.mean/std and model.bounds against how the model was trained, and the labels",
        ),
        FindingDoc(
            "RA002", "warning", "Attack returned inputs outside the threat",
            "an attack returned candidates outside the eps ball, the input bounds, or non-finite",
            "the engine projects them back before verifying, so the numbers stay sound, but the "
            "attack has a bug that may also weaken it",
            "report the attack and parameters; use another attack at this threat meanwhile",
        ),
        FindingDoc(
            "RA003", "error", "Unavailable gradients",
            "more than 10% of correctly classified samples have a zero, NaN or vanishing "
            "input gradient of the attack loss",
            "gradient attacks cannot move such samples: robust accuracy from them is overstated "
            "(quantization or other non-differentiable steps inside the model, saturated softmax)",
            "robaudit adds margin-loss attacks; also audit with gradient-free attacks and, for "
            "non-differentiable preprocessing, a straight-through (BPDA) variant of the model",
        ),
        FindingDoc(
            "RA004", "warning", "Unstable predictions (randomized model)",
            "the same input gets different logits on repeated forward passes",
            "gradients of one random draw mislead attacks, and a single verification pass can "
            "count a lucky draw: both over- and under-statements become possible",
            "robaudit then averages gradients over draws (EOT) and judges every verdict by a "
            "sequential Clopper-Pearson test of P(misclassified) > 1/2 (undecided samples count "
            "as broken in the headline and widen an interval); "
            "make randomness explicit and seeded if it is not a deliberate defense",
        ),
        FindingDoc(
            "RA005", "warning", "Incomplete optimization",
            "an iterative attack's loss was still rising over the last tenth of its steps (of "
            "its last restart or target when it has several)",
            "more steps would likely break more samples: robust accuracy may be overstated",
            "raise the attack's steps (or restarts) until the loss curve flattens",
        ),
        FindingDoc(
            "RA006", "warning", "Silent success or silent failure",
            "an attack's own success signal disagrees with the engine's fresh verification pass",
            "the model answers differently inside and outside the attack (randomness, state, "
            "batch dependence); attack-side success flags cannot be trusted for it",
            "robaudit counts only verified breaks; find why the model's answers change",
        ),
        FindingDoc(
            "RA007", "error", "Weak attack beats strong attack",
            "noise, single-step FGSM, a black-box (Square, SimBA, HopSkipJump) or a transfer "
            "attack broke samples at a threat that the multi-step gradient attacks at the same "
            "threat did not",
            "a strong attack should find everything a weak one finds; when it does not, its "
            "gradients are masked or obfuscated, and other samples it 'failed' on may be breakable",
            "treat the numbers as upper bounds: add gradient-free attacks, EOT or BPDA; robaudit "
            "already counts the weak attack's breaks (worst case per sample)",
        ),
        FindingDoc(
            "RA008", "error", "Unbounded attack does not reach zero",
            "PGD with an eps covering the whole input range leaves samples correctly classified",
            "with an unlimited budget any input can be turned into any other: an attack that "
            "cannot break everything there is not working on this model, so every number is suspect",
            "check gradients (RA003), randomness (RA004), and that the model really takes inputs "
            "in model.bounds",
        ),
        FindingDoc(
            "RA009", "warning", "Loss-scale masking",
            "cross-entropy attacks leave clearly more samples standing (> 5 points) than "
            "margin-loss attacks at the same threat",
            "scaled or saturated logits make cross-entropy gradients vanish; a defense can look "
            "strong against CE and be weak against a margin loss (Carlini & Wagner 2017)",
            "always include margin/DLR-loss attacks; the worst case already counts them",
        ),
        FindingDoc(
            "RA010", "warning", "Saturated softmax",
            "for most correctly classified samples the softmax probability of the top class "
            "rounds to exactly 1.0 in float32",
            "cross-entropy gradients underflow to zero on such samples; CE-based attacks stall",
            "robaudit adds margin-loss attacks at every threat; check whether the logits are "
            "deliberately scaled (a known gradient-masking trick)",
        ),
        FindingDoc(
            "RA011", "warning", "Model outputs probabilities, not logits",
            "every output row is non-negative and sums to 1",
            "attacks built for logits get weak gradients from probabilities (softmax applied twice)",
            "remove the final softmax from the exported model, or export logits",
        ),
        FindingDoc(
            "RA012", "error", "Predictions depend on the batch",
            "a sample's logits change with the other samples in its batch",
            "BatchNorm in training mode or similar: accuracy and robustness then depend on how "
            "samples are batched, so no number is reproducible",
            "export the model in eval mode; robaudit already calls eval(), so the dependence is "
            "built into the checkpoint",
        ),
        FindingDoc(
            "RA014", "info", "Battery ran without some of its members",
            "a named battery (e.g. autoattack) ran without members this version lacks",
            "the missing members (FAB-T, Square) rarely break samples APGD-CE and APGD-T left, "
            "but on models that mask gradients Square is the one that does",
            "add gradient-free attacks when they are available, and watch RA003/RA007",
        ),
        FindingDoc(
            "RA013", "info", "Integrity reaction applied",
            "robaudit changed the evaluation because an indicator fired (added attacks, EOT, votes)",
            "the reported numbers are those after the reaction, which is the stronger evaluation",
            "nothing; the report lists what was added",
        ),
        FindingDoc(
            "RA015", "warning", "Attacks skipped at this access level",
            "the model only answers queries (an ONNX file) or the run was limited with --access, "
            "and some configured attacks need more access than that",
            "the audit then measures a weaker attacker than the config describes: rows are "
            "relabelled to the access actually used, and gate thresholds on white-box threats "
            "fail as not evaluated",
            "audit the PyTorch checkpoint for white-box numbers, or configure black-box attacks "
            "(square, simba, hopskipjump, transfer) and gate thresholds with access: score",
        ),
        FindingDoc(
            "RA017", "error", "Certificate exceeds empirical robustness",
            "at some L2 radius, more samples are certified by randomized smoothing than an attack "
            "inside that radius leaves robust (beyond the certificate's own failure rate)",
            "a certificate is a proof; an attack cannot beat it unless the certification is "
            "broken (wrong sigma vs training noise, preprocessing applied after the noise, "
            "floating-point issues) or the model is not the one certified",
            "check certify.sigma, model.mean/std and the bounds; rerun with another seed and a "
            "larger n; do not rely on the certified numbers until this is explained",
        ),
        FindingDoc(
            "RA018", "warning", "Model handed over in training mode",
            "the model was in training mode when robaudit got it, and its outputs differ "
            "between training and eval mode (BatchNorm batch statistics, dropout)",
            "a model constructed or loaded in Python starts in training mode; audited that way "
            "its predictions would depend on the batch and each pass would change its BatchNorm "
            "statistics. robaudit audits eval mode, never changes the model, and restores its "
            "mode afterwards",
            "call model.eval() before deployment and before auditing, so the audited and the "
            "deployed model are the same",
        ),
        FindingDoc(
            "RA019", "warning", "Attack returned candidates that break the feature constraints",
            "on a tabular model (a feature schema), an attack that searches inside the "
            "constraints (PGD, APGD) returned candidates that break one: an immutable feature "
            "moved, a fractional integer, two categories at once, a broken relation",
            "such a row describes a record that cannot exist, so the engine never counts it as "
            "a break (the numbers stay sound), but the attack failed to stay feasible and may "
            "have searched less than it should",
            "report the attack and parameters; check the schema's bounds and relations (a "
            "constraint nothing can satisfy near the clean rows forces every repair back to "
            "the clean row)",
        ),
        FindingDoc(
            "RA016", "error", "Query accounting mismatch",
            "a black-box attack's own per-sample query counts disagree with robaudit's counter",
            "queries-per-success and the queries-vs-accuracy curve come from the per-sample "
            "counts; robaudit's totals use its own counter, so only the breakdown is suspect",
            "report the attack and parameters; its per-sample figures were replaced by estimates",
        ),
    )
}


def finding(fid: str, detail: str) -> Finding:
    """A finding with the catalogue's severity and title."""
    doc = CATALOG[fid]
    return Finding(fid, doc.severity, doc.title, detail)


def explain(fid: str) -> str:
    """The documentation of one finding, as plain text."""
    d = CATALOG[fid.upper()]
    return (
        f"{d.id} ({d.severity}): {d.title}\n"
        f"  raised if:      {d.raised_if}\n"
        f"  why it matters: {d.why}\n"
        f"  what to do:     {d.what_to_do}\n"
    )
