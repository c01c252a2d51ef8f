"""``robaudit init --model M --data D``: a preset's commented text, fitted to one model.

The preset's own lines and comments are kept; the lines a fitted config needs are filled in
where the preset leaves them to the run: ``input_shape`` (from the data), ``num_classes`` (one
forward pass), ``data.source``, the profile chosen by input size, and every budget the preset
leaves to that profile, written out so the user can edit them. The text is then validated
and must plan exactly the threats a scan of the preset would fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from robaudit.config import Config, config_from_yaml, fitted
from robaudit.errors import ConfigError
from robaudit.fitting import fit_config, probe_num_classes
from robaudit.inputs import InputSpec
from robaudit.loading.audio import waveform_source
from robaudit.loading.data import peek_input_shape
from robaudit.loading.model import load_model
from robaudit.profiles import PROFILES, Profile, choose


@dataclass(frozen=True)
class Starter:
    """The fitted config text and what was filled in, for the command's one-line summary."""

    text: str
    input_shape: tuple[int, ...]
    num_classes: int
    profile: str


def fitted_preset(
    preset_text: str,
    preset: Config,
    model: Path,
    data: str,
    *,
    trust_model: bool = False,
    shape: tuple[int, ...] | None = None,
) -> Starter:
    """The preset's text with shape (``shape``, else read from the data), classes, data
    source, profile and budgets filled in."""
    loaded = load_model(
        model, arch=preset.model.arch, arch_kwargs=preset.model.arch_kwargs, trust_model=trust_model
    )
    shape = shape or preset.model.input_shape or peek_input_shape(data, preset.data.split)
    classes = preset.model.num_classes or probe_num_classes(
        loaded.module, shape, preset.model.bounds, str(model)
    )
    if preset.profile == "auto":
        profile, why = choose(shape)
    else:
        profile, why = PROFILES[preset.profile], "set in the preset"
    span = float(preset.model.bounds[1]) - float(preset.model.bounds[0])
    text = _fill_model(preset_text, shape, classes, data, model)
    text = _fill_profile(text, profile.name, why)
    text = _fill_budgets(text, profile, span)
    cfg = config_from_yaml(text, source=f"config fitted to {model}")
    expected, _ = fit_config(preset, input_shape=shape, num_classes=classes)
    if not fitted(cfg) or {t.key for t in cfg.threats()} != {t.key for t in expected.threats()}:
        raise ConfigError(  # a preset whose layout the filler does not know
            f"could not fit the preset's text to {model}; copy it with `robaudit init --preset "
            "NAME` and set model.input_shape, model.num_classes and the eps values by hand"
        )
    return Starter(text, tuple(shape), int(classes), profile.name)


def fitted_audio(
    starter_text: str, starter: Config, model: Path, data: str, *, trust_model: bool = False
) -> Starter:
    """The audio starter fitted to one model and a source of waveforms: ``[C, T]``, classes,
    source and budgets as for a preset, and ``data.sample_rate`` read from the data (a WAV
    folder's first file, a ``.npz``'s ``sample_rate``)."""
    found = waveform_source(data, starter.data.split)
    if found is None:
        raise ConfigError(
            f"{data}: not a source of waveforms (a folder of WAV files in class subfolders, or "
            "a .npz with x of N x C x T and a sample_rate)"
        )
    shape, rate = found
    fit = fitted_preset(starter_text, starter, model, data, trust_model=trust_model, shape=shape)
    line = (
        f"  sample_rate: {rate}  # read from {_safe(data)}; every file must have it (never "
        "resampled)"
        if rate is not None
        else "  # sample_rate: 16000  # the clips' rate in Hz: set it so the report plays them"
    )
    text = _set_line(fit.text, r"  sample_rate: \S+", line, 1)
    config_from_yaml(text, source=f"config fitted to {model}")  # it must read back
    return replace(fit, text=text)


def fitted_table(
    starter_text: str,
    starter: Config,
    model: Path,
    data: str,
    label: str | None,
    schema: str | None,
    *,
    trust_model: bool = False,
) -> Starter:
    """The tabular starter filled in for one model and one table: shape (the schema's feature
    count), classes, source, label column and schema. Without ``schema`` robaudit infers one
    from the table and writes it inline, commented, for the user to check."""
    from robaudit.loading.tabular import read_tabular
    from robaudit.tabular.data import read_frame

    if label is None:
        columns = ", ".join(str(c) for c in read_frame(Path(data).expanduser()).columns)
        raise ConfigError(f"{data}: a table needs --label, the label column (columns: {columns})")
    info, x, _ = read_tabular(data, label, schema)
    loaded = load_model(
        model, arch=starter.model.arch, arch_kwargs=starter.model.arch_kwargs,
        trust_model=trust_model,
    )
    shape = (int(x.shape[1]),)
    classes = starter.model.num_classes or probe_num_classes(
        loaded.module, shape, starter.model.bounds, str(model)
    )
    text = _fill_model(starter_text, shape, classes, data, model)
    text = _set_line(text, r"  label: \S+", f"  label: {_quote(label)}  # the label column", 1)
    if schema is not None:
        line = f"  schema: {_quote(schema)}  # feature types, bounds, immutable features, relations"
    else:
        assert info.inferred_yaml is not None
        body = "\n".join(
            ("    " + ln) if ln.strip() else "" for ln in info.inferred_yaml.splitlines()
        )
        line = (
            "  schema:  # inferred from the data: CHECK every entry; the bounds scale the "
            "features, so they must be the ones the model was trained with\n"
        )
        line += body.replace("\\", "\\\\")
    text = _set_line(text, r"  schema: \S+", line, 1)
    config_from_yaml(text, source=f"config fitted to {model}")  # it must read back
    return Starter(text, shape, int(classes), "tabular")


def _fill_model(text: str, shape: tuple[int, ...], classes: int, data: str, model: Path) -> str:
    dims = ", ".join(str(d) for d in shape)
    text = _set_line(
        text,
        r"  # input_shape: \[[^\]]*\]",
        f"  input_shape: [{dims}]  # {InputSpec.of(shape).axes()} of one input "
        f"(read from {_safe(data)})",
    )
    text = _set_line(
        text,
        r"  # num_classes: \d+",
        f"  num_classes: {classes}  # logits per input (one forward pass of {_safe(str(model))})",
    )
    source = f"  source: {_quote(data)}  # the data this config was fitted to"
    return _set_line(text, r"  source: \S+", source, count=1)


def _fill_profile(text: str, name: str, why: str) -> str:
    chosen = f"profile: {name}  # chosen by input size ({why}); budgets below come from it"
    return _set_line(text, r"profile: \S+", chosen, count=1)


def _set_line(text: str, line: str, new: str, count: int = 0) -> str:
    """``text`` with the preset's lines that match ``line`` (a regex up to the line's comment)
    replaced by ``new``, a ``re.sub`` template; ``count`` of them at most (0: all)."""
    return re.sub(rf"(?m)^{line}( *)#.*$", new, text, count=count)


def _fill_budgets(text: str, profile: Profile, span: float) -> str:
    """Write out every budget the preset leaves to the profile, at the place it applies."""
    out: list[str] = []
    lines = text.splitlines()
    section = ""
    for k, line in enumerate(lines):
        if re.match(r"^\S", line):
            section = line.split(":", 1)[0]
        if section == "attacks":
            m = re.match(r"^(\s+)(?:- )?norm: (\w+)", line)
            entry = _entry(lines, k)
            if m and not any(re.match(r"^\s+(?:eps|db):", e) for e in entry):
                out.append(line.split("#", 1)[0].rstrip() if "eps omitted" in line else line)
                indent = " " * (len(line) - len(line.lstrip(" -")))
                budgets = ", ".join(profile.eps(m.group(2), span))
                out.append(f"{indent}eps: [{budgets}]  # the {profile.name} profile's budgets")
                continue
            h = re.match(r"^(\s+)eps: headline\b.*$", line)
            norm = next((re.search(r"norm: (\w+)", e) for e in entry if "norm:" in e), None)
            if h and norm:
                eps = profile.headline_eps(norm.group(1), span)
                out.append(f"{h.group(1)}eps: [{eps}]  # the {profile.name} profile's headline budget")
                continue
        if section == "gate":
            g = re.match(r"^(\s+- \{norm: (\w+)), (value: [^}]*\})", line)
            if g and "eps:" not in line:
                eps = profile.headline_eps(g.group(2), span)
                out.append(
                    f"{g.group(1)}, eps: {eps}, {g.group(3)}  # the {profile.name} profile's "
                    "headline budget"
                )
                continue
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _entry(lines: list[str], k: int) -> list[str]:
    """The lines of the attack entry that line ``k`` belongs to (from its ``-`` to the next)."""
    start = k
    while start > 0 and not lines[start].lstrip().startswith("- "):
        start -= 1
    end = k + 1
    while end < len(lines) and not lines[end].lstrip().startswith("- ") and lines[end].startswith(" "):
        end += 1
    return lines[start:end]


def _quote(value: str) -> str:
    """A YAML scalar for a path or source name (quoted when YAML would misread it)."""
    plain = re.fullmatch(r"[A-Za-z0-9_./:~-]+", value) and not value.startswith(("-", ":"))
    return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _safe(value: str) -> str:
    """A path for a YAML comment: one line, short."""
    value = value.replace("\n", " ")
    return value if len(value) <= 60 else "..." + value[-57:]


__all__ = ["Starter", "fitted_audio", "fitted_preset", "fitted_table"]
