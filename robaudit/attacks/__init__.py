"""Attack families; importing this package registers the built-in attacks."""

from robaudit.attacks import (  # noqa: F401  (imported to register)  # noqa: F401  (L0, registered)
    apgd,
    constrained_search,
    cw,
    deepfool,
    ead,
    fab,
    fgsm_pgd,
    hopskipjump,
    noise,
    patch_pgd,
    patch_rs,
    pgd_l0,
    sigma_zero,
    simba,
    sparse_rs,
    square,
    transfer,
)
from robaudit.attacks.base import Attack, AttackOutput, AttackParams, get_attack, registry

__all__ = ["Attack", "AttackOutput", "AttackParams", "get_attack", "registry"]
