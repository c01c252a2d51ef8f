"""``model.decision``: the deployed decision rule of a binary scoring model.

Fraud and credit models decide by a threshold on an imbalanced score, not by the larger
logit: ``decision: {positive_class: 1, threshold: 0.3}`` flags a sample when the softmax
probability of the positive class is at least 0.3. robaudit audits the rule as deployed: the
classifier adds ``log((1 - t) / t)`` to the positive logit, so its argmax is exactly that rule
(for two classes), and every attack, every verification and every report row sees it.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class DecisionRule(BaseModel):
    """A positive class and the probability at which a sample is called positive."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    positive_class: int = Field(1, ge=0, description="the class the threshold decides (fraud)")
    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="positive when its softmax probability is at least this"
    )

    def logit_offset(self, num_classes: int) -> list[float]:
        """What the classifier adds to each logit so that argmax applies the threshold."""
        out = [0.0] * num_classes
        out[self.positive_class] = math.log((1.0 - self.threshold) / self.threshold)
        return out
