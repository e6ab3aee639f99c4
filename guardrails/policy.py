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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from guardrails.colang.catalog import BUILTIN_FLOWS, COLANG_VERSIONS, RAIL_TYPES
from guardrails.detector import Scope
from guardrails.exchange import CallerContext
from guardrails.findings import Action

log = logging.getLogger("guardrails.policy")

POLICY_FILE = "config.yml"
ROUTING_FILE = "routing.yml"
TESTS_DIR = "tests"  # policy test cases live beside the policy and are not part of it
BUNDLE_SUFFIXES = {".yml", ".yaml", ".co", ".py", ".json", ".txt", ".jsonl"}
DETECTOR_KEYS = {"enabled", "action", "applies_to", "timeout_ms"}
OUR_KEYS = {"detectors", "on_detector_error", "routing", "description", "colang"}
# Top-level keys of NeMo Guardrails' config.yml that we accept and leave to the Colang runtime.
NEMO_KEYS = {
    "models", "rails", "instructions", "prompts", "sample_conversation", "colang_version", "actions_server_url",
    "lowest_temperature", "enable_multi_step_generation", "custom_data", "knowledge_base", "core", "passthrough",
    "streaming", "tracing", "user_messages", "bot_messages", "flows", "import_paths", "embedding_search_provider",
    "enable_rails_exceptions", "imports", "bot_thinking",
}
RAILS_SECTIONS = {*RAIL_TYPES, "config", "retrieval", "dialog", "actions"}
RAIL_KEYS = {"flows", "parallel", "streaming", "apply_to_reasoning_traces"}
COLANG_KEYS = {"timeout_ms"}
DEFAULT_TIMEOUT_S = 2.0


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


def load_policy(directory: str | Path, policy_id: str | None = None) -> Policy:
    directory = Path(directory)
    config_file = directory / POLICY_FILE
    if not config_file.is_file():
        raise PolicyError(f"no {POLICY_FILE} in policy directory", directory)
    text = config_file.read_text(encoding="utf-8")
    config = _read_yaml(text, config_file)
    colang_files = tuple(p for p in bundle_files(directory) if p.suffix == ".co")
    return _build_policy(config, text, config_file, policy_id or directory.name, bundle_version(directory),
                         directory, colang_files)


def policy_from_mapping(config: Mapping[str, Any], policy_id: str = "inline") -> Policy:
    """A policy from an inline config (NeMo endpoint's `guardrails.config`); built-in flows only."""
    if not isinstance(config, Mapping):
        raise PolicyError("an inline policy must be a mapping")
    text = yaml.safe_dump(dict(config), sort_keys=False)
    version = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return _build_policy(config, text, Path(f"<{policy_id}>"), policy_id, version, None, ())


def _read_yaml(text: str, file: Path) -> Mapping[str, Any]:
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"YAML error: {exc}", file, mark.line + 1 if mark else None) from exc
    if not isinstance(config, Mapping):
        raise PolicyError(f"{file.name} must be a mapping", file, 1)
    return config


def _build_policy(config: Mapping[str, Any], text: str, config_file: Path, policy_id: str, version: str,
                  directory: Path | None, colang_files: tuple[Path, ...]) -> Policy:
    for key in config:
        if key not in OUR_KEYS and key not in NEMO_KEYS:
            raise PolicyError(f"unknown key {key!r}", config_file, _line_of(text, key))
    detectors: dict[str, DetectorConfig] = {}
    raw_detectors = config.get("detectors") or {}
    if not isinstance(raw_detectors, Mapping):
        raise PolicyError("detectors must be a mapping of detector name to settings", config_file,
                          _line_of(text, "detectors"))
    for name, raw in raw_detectors.items():
        detectors[name] = _detector_config(name, raw, config_file, text)
    try:
        on_error = Action(config.get("on_detector_error", "warn"))
    except ValueError:
        raise PolicyError("on_detector_error must be allow, warn or block", config_file,
                          _line_of(text, "on_detector_error")) from None
    rails, routed = _rails(config, text, config_file, colang_files)
    warnings = []
    for detector, rail_types in routed.items():
        current = detectors.get(detector)
        if current is not None and not current.enabled:
            warnings.append(f"rails list the flow of detector {detector!r}, which detectors: disables")
            continue
        base = current or DetectorConfig(name=detector)
        detectors[detector] = replace(base, rail_types=frozenset(rail_types))
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
                    f"(see guardrails/colang/library) and not defined in the policy's .co files",
                    file, _line_of(text, name, after="rails"))
            routed.setdefault(BUILTIN_FLOWS[name][0], set()).add(section)
    timeout_ms = (config.get("colang") or {}).get("timeout_ms", DEFAULT_TIMEOUT_S * 1000)
    if not isinstance(timeout_ms, (int, float)) or timeout_ms <= 0:
        raise PolicyError("colang.timeout_ms must be a positive number", file, _line_of(text, "timeout_ms"))
    rails = Rails(flows=flows, custom=custom, colang_version=version, colang_files=colang_files,
                  timeout_s=float(timeout_ms) / 1000)
    return rails, routed


def _colang_flows(files: tuple[Path, ...], version: str) -> dict[str, Path]:
    if not files:
        return {}
    from guardrails.colang.parse import ColangSyntaxError, flows_in

    try:
        return flows_in(list(files), version)
    except ColangSyntaxError as exc:
        raise PolicyError(exc.message, exc.file, exc.line) from None


def _detector_config(name: str, raw: Any, file: Path, text: str) -> DetectorConfig:
    line = _line_of(text, name)
    if raw is None or raw is True:
        raw = {}
    if raw is False:
        return DetectorConfig(name=name, enabled=False, line=line)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"detector {name!r}: settings must be a mapping", file, line)
    try:
        action = Action(raw["action"]) if raw.get("action") is not None else None
        scope = Scope.parse(raw["applies_to"]) if raw.get("applies_to") is not None else None
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"detector {name!r}: {exc}", file, line) from None
    timeout_ms = raw.get("timeout_ms", DEFAULT_TIMEOUT_S * 1000)
    if not isinstance(timeout_ms, (int, float)) or timeout_ms <= 0:
        raise PolicyError(f"detector {name!r}: timeout_ms must be a positive number", file, line)
    return DetectorConfig(
        name=name,
        enabled=bool(raw.get("enabled", True)),
        action=action,
        scope=scope,
        timeout_s=float(timeout_ms) / 1000,
        settings={k: v for k, v in raw.items() if k not in DETECTOR_KEYS},
        line=line,
    )


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

    def route(self, context: CallerContext) -> str | None:
        if context.agent_id and context.agent_id in self.agents:
            return self.agents[context.agent_id]
        if context.tenant and context.tenant in self.tenants:
            return self.tenants[context.tenant]
        return self.default

    def policy_ids(self) -> set[str]:
        return {*self.agents.values(), *self.tenants.values(), *([self.default] if self.default else [])}


def load_routing(file: Path) -> Routing:
    if not file.is_file():
        return Routing()
    text = file.read_text(encoding="utf-8")
    raw = _read_yaml(text, file)
    unknown = set(raw) - {"agents", "tenants", "default"}
    if unknown:
        key = sorted(unknown)[0]
        raise PolicyError(f"unknown key {key!r}; expected agents, tenants, default", file,
                          _line_of(text, key))
    maps = {}
    for key in ("agents", "tenants"):
        value = raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise PolicyError(f"{key} must map names to policy ids", file, _line_of(text, key))
        maps[key] = {str(k): v for k, v in value.items()}
    default = raw.get("default")
    if default is not None and not isinstance(default, str):
        raise PolicyError("default must be a policy id", file, _line_of(text, "default"))
    return Routing(agents=maps["agents"], tenants=maps["tenants"], default=default)


# --- the store ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loaded:
    policy: Policy
    fingerprint: tuple[tuple[str, int, int], ...]
    checked_at: float


class PolicyStore:
    """Loads policy bundles from a root directory by id (the sub-directory name), reloading on change.

    A bundle is re-checked at most every `check_interval_s` (a stat of its files). A changed bundle is
    loaded completely before it replaces the old version, so a check sees one version or the other; a
    bundle that no longer loads keeps its last good version live and its error is kept in `errors`.
    `build`, when set (the check service sets it), also builds a changed version's detectors and flows
    before the swap: an edit that loads but does not build (an unknown detector, a rejected setting)
    must not replace a version that works.
    """

    def __init__(self, root: str | Path, check_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.check_interval_s = check_interval_s
        self.errors: dict[str, str] = {}  # policy id -> why its latest edit did not load
        self.build: Callable[[Policy], object] | None = None
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
            if loaded is not None:  # the bundle was removed: keep serving what we have
                return loaded.policy
            raise KeyError(policy_id)
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
            log.error("policy %s: edit rejected, still serving version %s: %s", policy_id,
                      loaded.policy.version, exc)
            loaded.fingerprint, loaded.checked_at = fingerprint, now
            return loaded.policy
        if loaded is not None and loaded.policy.version != policy.version:
            log.info("policy %s: reloaded version %s -> %s", policy_id, loaded.policy.version, policy.version)
        self._loaded[policy_id] = _Loaded(policy, fingerprint, now)  # one assignment: the swap is atomic
        self.errors.pop(policy_id, None)
        return policy

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
            log.error("routing: edit rejected: %s", exc)
            routing = cached[2]
        self._routing = (now, stamp, routing)
        return routing

    def route(self, context: CallerContext) -> str | None:
        return self.routing().route(context)


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for file in bundle_files(directory):
        stat = file.stat()
        stamps.append((str(file.relative_to(directory)), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)
