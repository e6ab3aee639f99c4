"""Policy bundles: a NeMo Guardrails configuration directory plus our detector settings.

`policies/<id>/config.yml` keeps NeMo's keys (`colang_version`, `rails.*.flows`, ...) and adds ours:

    rails:
      output: {flows: [check pii]}     # built-in flows run natively; the rail type narrows the segments
      tool_output: {flows: [check pii, my custom flow]}   # custom flows (in *.co) run on NeMo's runtime
    detectors:
      tool_undeclared:
        action: block                  # optional; otherwise by severity (high/critical block, medium warn)
        applies_to: {phases: [response]}
        timeout_ms: 250
        <any other key>: detector setting
    on_detector_error: warn            # action of a detector_error finding

A detector runs when its `detectors:` entry enables it or when a rail lists its built-in flow; `name: false`
always wins. The policy version is a content hash of the bundle's files, reported in every check response.
`policies/routing.yml` maps agents and tenants to policies; `PolicyStore` reloads a bundle when its files
change and keeps the last good version live when an edit breaks it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from guardrails.colang.catalog import BUILTIN_FLOWS, COLANG_VERSIONS, RAIL_TYPES
from guardrails.detector import InlineSettings, Scope
from guardrails.exchange import CallerContext, Phase, SegmentKind, Trust
from guardrails.findings import Action
from guardrails.policy_yaml import DuplicateKeyError, NonStringKey, load_yaml

log = logging.getLogger("guardrails.policy")
E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")

POLICY_FILE = "config.yml"
ROUTING_FILE = "routing.yml"
TESTS_DIR = "tests"  # policy test cases live beside the policy and are not part of it
BUNDLE_SUFFIXES = {".yml", ".yaml", ".co", ".py", ".json", ".txt", ".jsonl"}
DETECTOR_KEYS = {"enabled", "action", "applies_to", "timeout_ms"}
OUR_KEYS = {"detectors", "on_detector_error", "description", "colang"}
# Keys an author puts in a bundle's config.yml that belong elsewhere: nothing would read them there.
MISPLACED_KEYS = {
    "routing": f"routing does not belong in a bundle's {POLICY_FILE}: it goes in {ROUTING_FILE} at the top of the "
               "policy directory, beside the bundles (agents, tenants, default; see docs/policies.md)",
}
# Top-level keys of NeMo Guardrails' config.yml that we accept and leave to the Colang runtime.
NEMO_KEYS = {
    "models", "rails", "instructions", "prompts", "sample_conversation", "colang_version", "actions_server_url",
    "lowest_temperature", "enable_multi_step_generation", "custom_data", "knowledge_base", "core", "passthrough",
    "streaming", "tracing", "user_messages", "bot_messages", "flows", "import_paths", "embedding_search_provider",
    "enable_rails_exceptions", "imports", "bot_thinking",
}
RAILS_SECTIONS = {*RAIL_TYPES, "config", "retrieval", "dialog", "actions"}
UNRUN_RAILS = ("dialog", "retrieval")  # NeMo sections whose `flows` only a generating runtime would run
RAIL_KEYS = {"flows", "parallel", "streaming", "apply_to_reasoning_traces"}
COLANG_KEYS = {"timeout_ms"}
ROUTING_KEYS = ("agents", "tenants", "default")
DEFAULT_TIMEOUT_S = 2.0
SCOPE_ENUMS: dict[str, type[StrEnum]] = {"kinds": SegmentKind, "trust": Trust, "phases": Phase}
# Words authors reach for that difflib would not map to the value they mean ('answer' reads closest to 'user').
VALUE_ALIASES = {"answer": "assistant", "content": "assistant", "thinking": "reasoning", "input": "request",
                 "output": "response", "prompt": "request", "completion": "response"}
# Mappings whose keys name things (a tenant, an agent, a tool): the noun an error calls such a key by. A key YAML
# reads as a number or a boolean there (`007:`, `off:`) would route or match another name without a word.
NAME_NOUNS = {"agents": "agent key", "tenants": "tenant key", "tools": "tool key", "topics": "topic key",
              "arguments": "argument key", "detectors": "detector name"}


class PolicyError(Exception):
    """A policy that cannot be loaded; names the file and, where known, the line."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None) -> None:
        self.message, self.file, self.line = message, str(file) if file else None, line
        where = f"{self.file}:{line}: " if file and line else (f"{self.file}: " if file else "")
        super().__init__(where + message)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    name: str
    enabled: bool = True
    action: Action | None = None
    scope: Scope | None = None  # None: the detector's default scope
    timeout_s: float = DEFAULT_TIMEOUT_S
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Rail types whose flows list this detector's built-in flow; they narrow its scope. Empty: not routed.
    rail_types: frozenset[str] = frozenset()
    line: int | None = None  # of its `detectors:` entry in config.yml, for errors raised when it is built
    rails_line: int | None = None  # where `rails:` first lists its built-in flow (None: not listed)


@dataclass(frozen=True, slots=True)
class Rails:
    """`rails.*.flows`, split into built-in flows (run natively) and custom flows (run on NeMo's runtime)."""

    flows: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # rail type -> flow names, in order
    custom: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # rail type -> custom flows
    colang_version: str = "1.0"
    colang_files: tuple[Path, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S  # for one check's custom flows

    @property
    def has_custom_flows(self) -> bool:
        return any(self.custom.values())

    def rail_type_of(self, flow: str) -> str | None:
        return next((t for t in RAIL_TYPES if flow in self.flows.get(t, ())), None)


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: str
    detectors: tuple[DetectorConfig, ...]
    on_detector_error: Action = Action.WARN
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    rails: Rails = field(default_factory=Rails)
    warnings: tuple[str, ...] = ()

    def detector(self, name: str) -> DetectorConfig | None:
        return next((d for d in self.detectors if d.name == name), None)

    @property
    def config_file(self) -> Path | None:
        return self.path / POLICY_FILE if self.path is not None else None


def bundle_files(directory: Path) -> list[Path]:
    """The files that make up a policy: config, Colang, actions; not its test cases or caches."""
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.suffix in BUNDLE_SUFFIXES
        and "__pycache__" not in p.parts and p.relative_to(directory).parts[0] != TESTS_DIR
    )


def bundle_version(directory: Path) -> str:
    """A content hash of every policy file in the bundle (names and bytes), 12 hex digits."""
    digest = hashlib.sha256()
    for file in bundle_files(directory):
        digest.update(str(file.relative_to(directory)).encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def load_policy(directory: str | Path, policy_id: str | None = None,
                errors: list[PolicyError] | None = None) -> Policy:
    """The bundle's policy; raises its first error. With `errors` (validate), an error the rest of the file can be
    read past (a bad `action`, `applies_to`, `timeout_ms`, `on_detector_error`, a key YAML reads as a number, an
    unknown key, the rails) is appended there instead, and the policy is built with the default in its place, so
    that one run reports them all. A file that does not parse still raises: nothing else can be read."""
    directory = Path(directory)
    config_file = directory / POLICY_FILE
    if not config_file.is_file():
        raise PolicyError(f"no {POLICY_FILE} in policy directory", directory)
    text = config_file.read_text(encoding="utf-8")
    found: list[PolicyError] = []
    config = _read_yaml(text, config_file, _config_key_noun, None if errors is None else found)
    colang_files = tuple(p for p in bundle_files(directory) if p.suffix == ".co")
    try:
        return _build_policy(config, text, config_file, policy_id or directory.name, bundle_version(directory),
                             directory, colang_files, None if errors is None else found)
    finally:
        if errors is not None:  # in the file's order, as an author fixes them
            errors += sorted(found, key=lambda error: error.line or 0)


def _report(errors: list[PolicyError] | None, error: PolicyError) -> None:
    """Raise `error` (a load), or keep it where `errors` collects (validate): the caller goes on with a default."""
    if errors is None:
        raise error
    errors.append(error)


def policy_from_mapping(config: Mapping[str, Any], policy_id: str = "inline") -> Policy:
    """A policy from an inline config (NeMo endpoint's `guardrails.config`); built-in flows only."""
    if not isinstance(config, Mapping):
        raise PolicyError("an inline policy must be a mapping")
    # No text to quote here: a key that is not a string (YAML's `007:` sent inline) is refused by its value.
    for path in _non_string_paths(config.get("detectors"), ("detectors",)):
        where = ".".join(map(str, path[:-1]))
        raise PolicyError(f"{where}: {_config_key_noun(path)} {path[-1]!r} is not a string (YAML reads an unquoted "
                          "007 as the number 7, off as false): quote it")
    text = yaml.safe_dump(dict(config), sort_keys=False)
    version = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    policy = _build_policy(config, text, Path(f"<{policy_id}>"), policy_id, version, None, ())
    # The caller wrote these settings, not the operator: detectors refuse their file and URL settings.
    return replace(policy, detectors=tuple(replace(d, settings=InlineSettings(d.settings)) for d in policy.detectors))


def _read_yaml(text: str, file: Path, key_noun: Callable[[tuple[Any, ...]], str | None],
               errors: list[PolicyError] | None = None) -> Mapping[str, Any]:
    """The file's mapping. A key YAML did not read as a string is refused where `key_noun` names what such a key
    names (None: not ours to judge, as NeMo's keys); with `errors`, each is kept there and dropped from the
    mapping (its detector would report it again)."""
    try:
        config, keys = load_yaml(text)
    except DuplicateKeyError as exc:
        raise PolicyError(str(exc.problem), file, exc.line) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"YAML error: {exc}", file, mark.line + 1 if mark else None) from exc
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise PolicyError(f"{file.name} must be a mapping", file, 1)
    refused = []
    for key in keys:
        noun = key_noun(key.path)
        if noun is not None:
            _report(errors, PolicyError(_non_string_key(key, noun), file, key.line))
            refused.append(key.path)
    return _without(config, refused) if refused else config


def _without(value: Any, paths: list[tuple[Any, ...]]) -> Any:
    """A copy of `value` without the keys at `paths` (a path: the keys and list indexes down to it)."""
    if isinstance(value, Mapping):
        return {key: _without(item, [p[1:] for p in paths if len(p) > 1 and p[0] == key])
                for key, item in value.items() if (key,) not in paths}
    if isinstance(value, list):
        return [_without(item, [p[1:] for p in paths if len(p) > 1 and p[0] == index])
                for index, item in enumerate(value)]
    return value


def _non_string_key(key: NonStringKey, noun: str) -> str:
    # `detectors.tool_policy.agents: agent key 007 ...`: the mapping's path first, unless the noun says it all.
    where = ".".join(map(str, key.path[:-1]))
    return key.message(noun) if len(key.path) < 3 else f"{where}: {key.message(noun)}"


def _config_key_noun(path: tuple[Any, ...]) -> str | None:
    """In config.yml, every key under `detectors:` names a detector, a setting or something a setting names (an
    agent, a tool, an entity): none may be a number or a boolean. The rest is NeMo's."""
    if len(path) < 2 or path[0] != "detectors":
        return None
    if len(path) == 3:
        return "setting key"
    return NAME_NOUNS.get(path[-2], "key") if isinstance(path[-2], str) else "key"


def _routing_key_noun(path: tuple[Any, ...]) -> str:
    """In routing.yml every key is a name: `agents:`/`tenants:` entries, or the top-level keys."""
    return NAME_NOUNS.get(path[0], "key") if len(path) == 2 and isinstance(path[0], str) else "key"


def _non_string_paths(value: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Paths of the keys in `value` (nested mappings and lists) that are not strings."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                found.append((*path, key))
            found += _non_string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _non_string_paths(item, (*path, index))
    return found


def _build_policy(config: Mapping[str, Any], text: str, config_file: Path, policy_id: str, version: str,
                  directory: Path | None, colang_files: tuple[Path, ...],
                  errors: list[PolicyError] | None = None) -> Policy:
    for key in config:
        if key in MISPLACED_KEYS:
            _report(errors, PolicyError(MISPLACED_KEYS[key], config_file, _line_of(text, key)))
        elif key not in OUR_KEYS and key not in NEMO_KEYS:
            _report(errors, PolicyError(f"unknown key {key!r}{did_you_mean(key, OUR_KEYS | NEMO_KEYS)}", config_file,
                                        _line_of(text, key)))
    detectors: dict[str, DetectorConfig] = {}
    raw_detectors = config.get("detectors") or {}
    if not isinstance(raw_detectors, Mapping):
        _report(errors, PolicyError("detectors must be a mapping of detector name to settings", config_file,
                                    _line_of(text, "detectors")))
        raw_detectors = {}
    for name, raw in raw_detectors.items():
        try:
            detectors[name] = _detector_config(name, raw, config_file, text, errors)
        except PolicyError as exc:  # its settings are not a mapping: nothing of it to build
            _report(errors, exc)
    try:
        on_error = _enum_value(Action, config.get("on_detector_error", "warn"), "on_detector_error", config_file,
                               _line_of(text, "on_detector_error"))
    except PolicyError as exc:
        _report(errors, exc)
        on_error = Action.WARN
    try:
        rails, routed = _rails(config, text, config_file, colang_files)
    except PolicyError as exc:  # the first rails error only: the rest of `rails:` depends on what it refused
        _report(errors, exc)
        rails, routed = Rails(), {}
    warnings = []
    for detector, rail_types in routed.items():
        current = detectors.get(detector)
        if current is not None and not current.enabled:
            warnings.append(f"rails list the flow of detector {detector!r}, which detectors: disables")
            continue
        base = current or DetectorConfig(name=detector)
        flow = next(f for f, (d, _) in BUILTIN_FLOWS.items() if d == detector)
        detectors[detector] = replace(base, rail_types=frozenset(rail_types),
                                      rails_line=_line_of(text, flow, after="rails"))
    return Policy(
        id=policy_id,
        version=version,
        detectors=tuple(detectors.values()),
        on_detector_error=on_error,
        config=config,
        path=directory,
        rails=rails,
        warnings=tuple(warnings),
    )


def _rails(config: Mapping[str, Any], text: str, file: Path,
           colang_files: tuple[Path, ...]) -> tuple[Rails, dict[str, set[str]]]:
    """Validate `rails:` and `colang_version`; map built-in flows to detectors, keep custom ones."""
    version = str(config.get("colang_version", "1.0"))
    if version not in COLANG_VERSIONS:
        raise PolicyError(f"colang_version must be one of {list(COLANG_VERSIONS)}, not {version!r}", file,
                          _line_of(text, "colang_version"))
    defined = _colang_flows(colang_files, version)
    raw = config.get("rails") or {}
    if not isinstance(raw, Mapping):
        raise PolicyError("rails must be a mapping", file, _line_of(text, "rails"))
    flows: dict[str, tuple[str, ...]] = {}
    custom: dict[str, tuple[str, ...]] = {}
    routed: dict[str, set[str]] = {}
    for section, body in raw.items():
        if section not in RAILS_SECTIONS:
            raise PolicyError(f"unknown rails section {section!r}; expected one of {sorted(RAILS_SECTIONS)}",
                              file, _line_of(text, section))
        if section not in RAIL_TYPES:
            if section in UNRUN_RAILS and isinstance(body, Mapping) and body.get("flows"):
                raise PolicyError(
                    f"rails.{section}.flows: this service runs no {section} rails (it checks an exchange that has "
                    f"happened and generates nothing), so these flows would never run; list each under the rail it "
                    f"checks: rails.{', rails.'.join(RAIL_TYPES)}", file, _line_of(text, section))
            continue
        body = body or {}
        if not isinstance(body, Mapping) or set(body) - RAIL_KEYS:
            extra = sorted(set(body) - RAIL_KEYS) if isinstance(body, Mapping) else []
            raise PolicyError(f"rails.{section}: expected a mapping with keys {sorted(RAIL_KEYS)}"
                              + (f"; unknown {extra}" if extra else ""), file, _line_of(text, section))
        names = body.get("flows") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PolicyError(f"rails.{section}.flows must be a list of flow names", file,
                              _line_of(text, section))
        flows[section] = tuple(names)
        custom[section] = tuple(n for n in names if n in defined)
        for name in names:
            if name in defined:
                continue  # an author's flow, possibly overriding the built-in of the same name
            if name not in BUILTIN_FLOWS:
                close = difflib.get_close_matches(name, [*defined, *BUILTIN_FLOWS], n=1, cutoff=0.8)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise PolicyError(
                    f"rails.{section}: unknown flow {name!r}; {hint}not a built-in rail "
                    f"(see guardrails/colang/library) and not defined in the policy's .co files"
                    f"{_undefined_flow_hint(name, colang_files, version, defined, 'colang_version' in config)}",
                    file, _line_of(text, name, after="rails"))
            routed.setdefault(BUILTIN_FLOWS[name][0], set()).add(section)
    rails = Rails(flows=flows, custom=custom, colang_version=version, colang_files=colang_files,
                  timeout_s=_colang_timeout_s(config.get("colang"), text, file))
    return rails, routed


def _undefined_flow_hint(name: str, files: tuple[Path, ...], version: str, defined: Collection[str],
                         version_set: bool) -> str:
    """Why a flow the author did write is not found: its header is in the other Colang version's syntax (the
    parser of this version reads it as something else, without an error), else which flows the files define."""
    header = (rf"^\s*flow\s+{re.escape(name)}\s*(?:\$.*)?(?:#.*)?$" if version == "1.0"
              else rf"^\s*define\s+(?:sub)?flow\s+{re.escape(name)}\s*(?:#.*)?$")
    for file in files:
        lines = file.read_text(encoding="utf-8").splitlines()
        number = next((n for n, line in enumerate(lines, 1) if re.match(header, line)), None)
        if number is None:
            continue
        if version == "1.0":
            default = "" if version_set else " (the default: config.yml does not set it)"
            return (f"; {file.name}:{number} defines it in Colang 2.x syntax (`flow {name}`), but colang_version "
                    f"is \"1.0\"{default}: set `colang_version: \"2.x\"`, or write `define subflow {name}`")
        return (f"; {file.name}:{number} defines it in Colang 1.0 syntax (`define flow`), but colang_version is "
                f"\"{version}\": write `flow {name}`, or set `colang_version: \"1.0\"`")
    if not files:
        return ""
    return f"; the .co files define: {', '.join(sorted(defined))}" if defined else "; the .co files define no flow"


def _colang_timeout_s(raw: Any, text: str, file: Path) -> float:
    """`colang: {timeout_ms}`; any other key is a typo that would otherwise change nothing."""
    if raw is None:
        return DEFAULT_TIMEOUT_S
    line = _line_of(text, "colang")
    if not isinstance(raw, Mapping):
        raise PolicyError("colang must be a mapping, e.g. {timeout_ms: 2000}", file, line)
    for key in raw:
        if key not in COLANG_KEYS:
            raise PolicyError(f"colang: unknown key {key!r}{choices_hint(key, COLANG_KEYS)}", file,
                              _key_line(text, str(key), line))
    return _timeout_s(raw.get("timeout_ms"), "colang.timeout_ms", file, _key_line(text, "timeout_ms", line))


def _colang_flows(files: tuple[Path, ...], version: str) -> dict[str, Path]:
    if not files:
        return {}
    from guardrails.colang.parse import ColangSyntaxError, flows_in

    try:
        return flows_in(list(files), version)
    except ColangSyntaxError as exc:
        raise PolicyError(exc.message, exc.file, exc.line) from None


def _detector_config(name: str, raw: Any, file: Path, text: str,
                     errors: list[PolicyError] | None = None) -> DetectorConfig:
    """One `detectors:` entry. With `errors`, a bad engine-level key is kept there and its default used, so the
    detector is still built and its settings checked."""
    line = _line_of(text, name)
    if raw is None or raw is True:
        raw = {}
    if raw is False:
        return DetectorConfig(name=name, enabled=False, line=line)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"detector {name!r}: settings must be a mapping", file, line)
    where = f"detector {name!r}"

    def read(parse: Callable[[], T], default: T) -> T:
        try:
            return parse()
        except PolicyError as exc:
            _report(errors, exc)
            return default

    action = None
    if raw.get("action") is not None:
        action = read(lambda: _enum_value(Action, raw["action"], f"{where}: action", file,
                                          _key_line(text, "action", line)), None)
    scope = None
    if raw.get("applies_to") is not None:
        scope = read(lambda: _scope(raw["applies_to"], where, file, text, _key_line(text, "applies_to", line)), None)
    return DetectorConfig(
        name=name,
        enabled=read(lambda: _enabled(raw.get("enabled"), where, file, _key_line(text, "enabled", line)), True),
        action=action,
        scope=scope,
        timeout_s=read(lambda: _timeout_s(raw.get("timeout_ms"), f"{where}: timeout_ms", file,
                                          _key_line(text, "timeout_ms", line)), DEFAULT_TIMEOUT_S),
        settings={k: v for k, v in raw.items() if k not in DETECTOR_KEYS},
        line=line,
    )


def _enabled(value: Any, where: str, file: Path, line: int | None) -> bool:
    """`enabled: true|false` (empty: true). A string is refused: `enabled: "false"` would read as true."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: enabled must be true or false (unquoted), not {value!r}", file, line)
    return value


def _scope(raw: Any, where: str, file: Path, text: str, line: int | None) -> Scope:
    """`applies_to: {kinds, trust, phases}`, each a list of values; an error names the key and the values."""
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: applies_to must be a mapping, e.g. {{phases: [response]}}", file, line)
    values: dict[str, list[StrEnum]] = {}
    for key, items in raw.items():
        key_line = _key_line(text, str(key), line)
        enum = SCOPE_ENUMS.get(key)
        if enum is None:
            raise PolicyError(f"{where}: unknown applies_to key {key!r}{choices_hint(key, SCOPE_ENUMS)}", file,
                              key_line)
        values[key] = _enum_list(enum, items, f"{where}: applies_to.{key}", file, key_line)
    return Scope.parse(values)


def _enum_list(enum: type[StrEnum], items: Any, what: str, file: Path, line: int | None) -> list[StrEnum]:
    # A bare string is refused rather than guessed at: iterating it would read `response` letter by letter.
    if items is None:
        return []
    valid = [member.value for member in enum]
    if isinstance(items, str):
        example = items if items in valid else (_closest(items, valid) or valid[-1])
        raise PolicyError(f"{what} must be a list, e.g. [{example}]", file, line)
    if not isinstance(items, list):
        raise PolicyError(f"{what} must be a list of: {', '.join(valid)}", file, line)
    return [_enum_value(enum, item, what, file, line) for item in items]


def _enum_value(enum: type[E], value: Any, what: str, file: Path, line: int | None) -> E:
    valid = [member.value for member in enum]
    if isinstance(value, str) and value in valid:
        return enum(value)
    raise PolicyError(f"{what}: {value!r} is not valid{choices_hint(value, valid)}", file, line)


def _timeout_s(value: Any, what: str, file: Path, line: int | None) -> float:
    """A `timeout_ms` in seconds (absent or empty: the default). `true` is not 1 ms, though bool is an int."""
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise PolicyError(f"{what} must be a positive number of milliseconds, not {value!r}", file, line)
    return float(value) / 1000


def _closest(word: Any, valid: Collection[str]) -> str | None:
    if isinstance(word, str) and word in VALUE_ALIASES and VALUE_ALIASES[word] in valid:
        return VALUE_ALIASES[word]
    close = difflib.get_close_matches(str(word), list(valid), n=1)
    return close[0] if close else None


def did_you_mean(word: Any, valid: Collection[str]) -> str:
    """`; did you mean 'x'?` for the valid name closest to a misspelt one, else nothing."""
    close = _closest(word, valid)
    return f"; did you mean {close!r}?" if close else ""


def choices_hint(word: Any, valid: Collection[str]) -> str:
    """The closest valid value, then all of them: `; did you mean 'x'? valid: a, b`."""
    ordered = list(valid) if not isinstance(valid, (set, frozenset)) else sorted(valid)
    return f"{did_you_mean(word, valid) or ';'} valid: {', '.join(ordered)}"


def _key_line(text: str, key: str, start: int | None) -> int | None:
    """1-based line of `key:` at or after line `start` (the entry the key belongs to, which may hold it in
    flow style: `pii: {action: blok}`); `start` when not found."""
    if start is None:
        return _line_of(text, key)
    pattern = re.compile(rf"(?:^|[\s{{,])['\"]?{re.escape(key)}['\"]?\s*:")
    for number, line in enumerate(text.splitlines()[start - 1:], start):
        if pattern.search(line.split("#", 1)[0]):
            return number
    return start


def _line_of(text: str, key: str, after: str | None = None) -> int | None:
    """1-based line of the first `key:` (or list item `- key`) in the file, for error messages."""
    started = after is None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not started:
            started = stripped.startswith(f"{after}:")
            continue
        if stripped.startswith((f"{key}:", f'"{key}":', f"'{key}':")):
            return number
        if after is not None and (key in stripped) and not stripped.startswith("#"):
            return number
    return None


# --- selection -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Routing:
    """Which policy serves a caller: `routing.yml` maps agents (first) and tenants to policy ids."""

    agents: Mapping[str, str] = field(default_factory=dict)
    tenants: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None
    # Line of each rule (`agents.<agent>`, `tenants.<tenant>`, `default`) in routing.yml, for error messages.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    def rule(self, context: CallerContext) -> tuple[str, str] | None:
        """The policy id routing gives this caller and the rule that gives it (`agents.<agent>`, ...)."""
        if context.agent_id and context.agent_id in self.agents:
            return self.agents[context.agent_id], f"agents.{context.agent_id}"
        if context.tenant and context.tenant in self.tenants:
            return self.tenants[context.tenant], f"tenants.{context.tenant}"
        return (self.default, "default") if self.default else None

    def route(self, context: CallerContext) -> str | None:
        rule = self.rule(context)
        return rule[0] if rule else None

    def policy_ids(self) -> set[str]:
        return {*self.agents.values(), *self.tenants.values(), *([self.default] if self.default else [])}

    def line_naming(self, policy_id: str) -> int | None:
        """The first line of routing.yml that routes to `policy_id`."""
        rules = [*(f"agents.{a}" for a, p in self.agents.items() if p == policy_id),
                 *(f"tenants.{t}" for t, p in self.tenants.items() if p == policy_id),
                 *(["default"] if self.default == policy_id else [])]
        return min((self.lines[r] for r in rules if r in self.lines), default=None)


def load_routing(file: Path) -> Routing:
    if not file.is_file():
        return Routing()
    text = file.read_text(encoding="utf-8")
    raw = _read_yaml(text, file, _routing_key_noun)
    unknown = set(raw) - set(ROUTING_KEYS)
    if unknown:
        key = sorted(unknown, key=str)[0]
        raise PolicyError(f"unknown key {key!r}{choices_hint(key, ROUTING_KEYS)}", file, _line_of(text, str(key)))
    maps = {}
    for key in ("agents", "tenants"):
        value = raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise PolicyError(f"{key} must map names to policy ids", file, _line_of(text, key))
        maps[key] = {str(k): v for k, v in value.items()}
    default = raw.get("default")
    if default is not None and not isinstance(default, str):
        raise PolicyError("default must be a policy id", file, _line_of(text, "default"))
    return Routing(agents=maps["agents"], tenants=maps["tenants"], default=default, lines=_routing_lines(text))


def _routing_lines(text: str) -> dict[str, int]:
    """Line of each rule's policy id, from the YAML node tree (ids may sit in flow style, several per line)."""
    root = yaml.compose(text)
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        if key_node.value == "default":
            lines["default"] = value_node.start_mark.line + 1
        elif isinstance(value_node, yaml.MappingNode):
            for name_node, id_node in value_node.value:
                lines[f"{key_node.value}.{name_node.value}"] = id_node.start_mark.line + 1
    return lines


# --- the store ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loaded:
    policy: Policy
    fingerprint: tuple[tuple[str, int, int], ...]
    checked_at: float
    missing_since: float | None = None  # when its config.yml was first seen missing, its directory still there


# An editor or a config tool that replaces config.yml (delete, then write) leaves a moment without it: a bundle
# is taken as removed once the file stays missing this long, or at once when its directory is gone.
REMOVAL_GRACE_S = 2.0


class PolicyStore:
    """Loads policy bundles from a root directory by id (the sub-directory name), reloading on change.

    A bundle is re-checked at most every `check_interval_s` (a stat of its files). A changed bundle is
    loaded completely before it replaces the old version, so a check sees one version or the other; a
    bundle that no longer loads keeps its last good version live and its error is kept in `errors`.
    `build`, when set (the check service sets it), also builds a changed version's detectors and flows
    before the swap: an edit that loads but does not build (an unknown detector, a rejected setting)
    must not replace a version that works. A removed bundle (its directory gone, or its config.yml missing for
    `removal_grace_s`) is no longer served, as `guardrails check` on the same directory would not find it;
    `removed`, when set, is told its id. One that comes back is loaded again.
    """

    def __init__(self, root: str | Path, check_interval_s: float = 1.0,
                 removal_grace_s: float = REMOVAL_GRACE_S) -> None:
        self.root = Path(root)
        self.check_interval_s = check_interval_s
        self.removal_grace_s = removal_grace_s
        self.errors: dict[str, str] = {}  # policy id -> why its latest edit did not load
        # Policy id (or routing.yml) -> edits rejected so far in this process: the metrics' counter, since a
        # rejected reload is otherwise only on /readyz and in the log.
        self.reload_failures: dict[str, int] = {}
        self.build: Callable[[Policy], object] | None = None
        self.removed: Callable[[str], object] | None = None
        self._loaded: dict[str, _Loaded] = {}
        self._routing: tuple[float, tuple[int, int], Routing] | None = None

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / POLICY_FILE).is_file())

    def get(self, policy_id: str) -> Policy:
        loaded = self._loaded.get(policy_id)
        now = time.monotonic()
        if loaded is not None and now - loaded.checked_at < self.check_interval_s:
            return loaded.policy
        directory = self.root / policy_id
        if "/" in policy_id or policy_id.startswith(".") or not (directory / POLICY_FILE).is_file():
            if loaded is not None:
                if not self._removed(directory, loaded, now):
                    return loaded.policy  # config.yml being replaced: the last good version serves meanwhile
                self._forget(policy_id, loaded)  # serving it would answer for a bundle no one can see
            raise KeyError(policy_id)
        if loaded is not None:
            loaded.missing_since = None
        fingerprint = _fingerprint(directory)
        if loaded is not None and fingerprint == loaded.fingerprint:
            loaded.checked_at = now
            return loaded.policy
        try:
            policy = load_policy(directory, policy_id)
            if self.build is not None:
                self.build(policy)
        except PolicyError as exc:
            if loaded is None:
                raise
            self.errors[policy_id] = f"kept version {loaded.policy.version}: {exc}"
            self.reload_failures[policy_id] = self.reload_failures.get(policy_id, 0) + 1
            log.error("policy %s: edit rejected in worker pid %d, still serving version %s: %s", policy_id,
                      os.getpid(), loaded.policy.version, one_line(str(exc)))
            loaded.fingerprint, loaded.checked_at = fingerprint, now
            return loaded.policy
        if loaded is not None and loaded.policy.version != policy.version:
            log.info("policy %s: reloaded version %s -> %s in worker pid %d", policy_id, loaded.policy.version,
                     policy.version, os.getpid())
        self._loaded[policy_id] = _Loaded(policy, fingerprint, now)  # one assignment: the swap is atomic
        self.errors.pop(policy_id, None)
        return policy

    def prune(self) -> list[str]:
        """Forget every loaded bundle no longer on disk (what `get` does for one it is asked for); return their
        ids. Readiness calls it, so a removed bundle leaves `/readyz` and the metrics without a check naming it."""
        on_disk = set(self.ids())
        now = time.monotonic()
        gone = [policy_id for policy_id, loaded in self._loaded.copy().items()
                if policy_id not in on_disk and self._removed(self.root / policy_id, loaded, now)]
        for policy_id in gone:
            loaded = self._loaded.get(policy_id)
            if loaded is not None:
                self._forget(policy_id, loaded)
        return gone

    def _removed(self, directory: Path, loaded: _Loaded, now: float) -> bool:
        """Whether a loaded bundle whose config.yml is missing is gone: its directory is, or the file has stayed
        missing for `removal_grace_s` (a replaced file is missing for a moment)."""
        if not directory.is_dir():
            return True
        if loaded.missing_since is None:
            loaded.missing_since = now
        return now - loaded.missing_since >= self.removal_grace_s

    def _forget(self, policy_id: str, loaded: _Loaded) -> None:
        if self._loaded.pop(policy_id, None) is None:
            return  # another thread forgot it first
        self.errors.pop(policy_id, None)  # a rejected edit of a bundle that is gone is no longer news
        self.reload_failures.pop(policy_id, None)  # its series go with its policy_info
        log.warning("policy %s: removed from %s (no %s), no longer served in worker pid %d (was version %s)",
                    policy_id, self.root, POLICY_FILE, os.getpid(), loaded.policy.version)
        if self.removed is not None:
            self.removed(policy_id)

    def loaded_versions(self) -> dict[str, str]:
        """The version serving for each bundle loaded so far: read without touching the disk or loading (a copy
        first, taken at once, since a check on another thread may load a bundle meanwhile)."""
        return {policy_id: loaded.policy.version for policy_id, loaded in self._loaded.copy().items()}

    def reload_status(self) -> dict[str, tuple[bool, int]]:
        """Per bundle loaded so far (and routing.yml once read): whether its latest edit loaded, and how many
        edits were rejected in this process. Read without touching the disk, as `loaded_versions`."""
        ids = [*self._loaded.copy(), *([ROUTING_FILE] if self._routing is not None else [])]
        errors, failures = self.errors.copy(), self.reload_failures.copy()
        return {key: (key not in errors, failures.get(key, 0)) for key in ids}

    def routing(self) -> Routing:
        """`routing.yml`, reloaded on change; a broken edit keeps the previous mapping."""
        file = self.root / ROUTING_FILE
        now = time.monotonic()
        cached = self._routing
        if cached is not None and now - cached[0] < self.check_interval_s:
            return cached[2]
        try:
            stat = file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, 0)
        if cached is not None and cached[1] == stamp:
            self._routing = (now, stamp, cached[2])
            return cached[2]
        try:
            routing = load_routing(file)
            self.errors.pop(ROUTING_FILE, None)
        except PolicyError as exc:
            if cached is None:
                raise
            self.errors[ROUTING_FILE] = f"kept the previous routing: {exc}"
            self.reload_failures[ROUTING_FILE] = self.reload_failures.get(ROUTING_FILE, 0) + 1
            log.error("routing: edit rejected in worker pid %d, still serving the previous routing: %s", os.getpid(),
                      one_line(str(exc)))
            routing = cached[2]
        self._routing = (now, stamp, routing)
        return routing

    def route(self, context: CallerContext) -> str | None:
        return self.routing().route(context)


def one_line(text: str) -> str:
    """A multi-line error (YAML's quotes the offending line) as one log line, lines joined by ` | `; the caret lines
    under the quotes point at nothing once joined."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip() not in ("", "^"))


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for file in bundle_files(directory):
        stat = file.stat()
        stamps.append((str(file.relative_to(directory)), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)
