"""The threat-model config: YAML in, typed and validated objects out.

Every validation error names its YAML path (``attacks[1].steps``) and what would be valid;
an unknown key suggests the closest known one. Attack parameters are validated by each
attack's own parameter model, so ``robaudit attacks`` and the config never disagree.

The schema (:mod:`.sections`), reading YAML and dicts (:mod:`.reading`), whole-config checks
(:mod:`.checks`) and error messages (:mod:`.messages`). Layer: config imports nothing from the
engine, results, reports or front ends (tests/architecture).
"""

from __future__ import annotations

from robaudit.access import LEVELS as ACCESS_LEVELS
from robaudit.config.certification import CertifiedThreshold
from robaudit.config.checks import ACCESS_ORDER, fitted, variant_labels
from robaudit.config.gate import GateSection, GateThreshold
from robaudit.config.reading import (
    config_from_dict,
    config_from_yaml,
    load_config,
    preset_path,
)
from robaudit.config.sections import (
    FORMATS,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_SEED,
    PRESET_NAMES,
    PRESETS_DIR,
    PROTOCOLS,
    SMOKE_PROTOCOLS,
    STARTER_NAMES,
    Access,
    AttackSpec,
    CertifySection,
    Config,
    DataSection,
    DefenseSpec,
    EngineSection,
    Format,
    IntegritySection,
    ModelSection,
    Norm,
    ReportSection,
)
from robaudit.norms import CONFIG_NORMS as NORMS

__all__ = [
    "ACCESS_LEVELS",
    "ACCESS_ORDER",
    "FORMATS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_SEED",
    "NORMS",
    "PRESETS_DIR",
    "PRESET_NAMES",
    "PROTOCOLS",
    "SMOKE_PROTOCOLS",
    "STARTER_NAMES",
    "Access",
    "AttackSpec",
    "CertifiedThreshold",
    "CertifySection",
    "Config",
    "DataSection",
    "DefenseSpec",
    "EngineSection",
    "Format",
    "GateSection",
    "GateThreshold",
    "IntegritySection",
    "ModelSection",
    "Norm",
    "ReportSection",
    "config_from_dict",
    "config_from_yaml",
    "fitted",
    "load_config",
    "preset_path",
    "variant_labels",
]
