"""Who the attacker is: the three access levels, ordered, defined once.

``white-box`` sees gradients, ``score`` sees output scores, ``decision`` sees labels only.
Threats, attacks (what they require), classifiers (what they allow) and the config all
take their levels and their order from here.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal


class Access(str, Enum):
    """An access level; compares and hashes equal to its config spelling."""

    DECISION = "decision"
    SCORE = "score"
    WHITE_BOX = "white-box"

    __hash__ = str.__hash__  # Enum hashes the member's name; dict lookups by "score" must hit

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def rank(self) -> int:
        """0 for decision, 1 for score, 2 for white-box: more access, higher rank."""
        return RANK[self.value]


AccessName = Literal["white-box", "score", "decision"]  # the config's type (pydantic, mypy)
LEVELS: tuple[str, ...] = ("white-box", "score", "decision")  # how configs and errors list them
RANK: dict[str, int] = {"decision": 0, "score": 1, "white-box": 2}
# the access an attack needs, by what it requires of the model
FOR_REQUIRES: dict[str, str] = {"gradients": "white-box", "scores": "score", "labels": "decision"}


def weakest(*levels: str) -> str:
    """The level with the least access among ``levels``."""
    return min(levels, key=RANK.__getitem__)


def allows(level: str, need: str) -> bool:
    """Whether an attacker at ``level`` has the access ``need`` asks for."""
    return RANK[need] <= RANK[level]
