"""`guardrails policy validate DIR...` and `guardrails policy test DIR...`: policies under CI.

DIR is a policy bundle (has config.yml) or a directory of bundles (then routing.yml is checked too).
`validate` loads each bundle, builds its detectors (a setting of the wrong type, or one the detector does not
read, is an error) and its Colang runtime, and reports every action or flow a flow calls that nothing defines,
with file and line. It also builds the detectors the bundle disables, and drops them, so that a typo in their
settings is found now and not the day one is enabled; the service never builds them.
A test case is a JSON file in `<bundle>/tests/`:

    {"description": "...", "check": {<a /v1/checks body>},
     "expect": {"verdict": "block", "categories": ["custom"], "not_categories": ["pii"],
                "detectors": ["my flow"]}}

`categories`/`detectors` must appear among the findings that warn or block; `not_categories` must not. A value
that no finding can have (a category not in the list, a detector not installed, a flow the policy does not list)
fails the case: `"not_categories": ["secrets"]` would otherwise pass forever.
Exit codes: 0 all good, 1 a test case failed, 4 a policy does not load.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from guardrails.colang.catalog import RAIL_TYPES
from guardrails.detector import DetectorRegistry
from guardrails.engine import Engine
from guardrails.errors import GuardrailsError
from guardrails.findings import Action, Category
from guardrails.policy import (
    POLICY_FILE,
    ROUTING_FILE,
    TESTS_DIR,
    DetectorConfig,
    Policy,
    PolicyError,
    PolicyStore,
    choices_hint,
    load_policy,
    load_routing,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 4
EXPECT_KEYS = {"verdict", "categories", "not_categories", "detectors"}
VERDICTS = [action.value for action in Action]
CATEGORIES = [category.value for category in Category]
# How close a disabled name that is not installed must be to an installed one to read as its typo (an error);
# stricter than difflib's 0.6 so that a plug-in merely absent here (`tool_audit`, not `tool_taint`) only warns.
TYPO_CUTOFF = 0.85
MISNAMED_CONFIG = "config.yaml"


def add_policy_commands(sub: Any) -> None:
    policy = sub.add_parser("policy", help="validate and test policy bundles")
    commands = policy.add_subparsers(dest="policy_command", required=True, parser_class=type(policy))
    validate = commands.add_parser("validate", help="load each policy and build its detectors and flows")
    validate.add_argument("dirs", nargs="+", metavar="DIR", help="a policy bundle or a directory of bundles")
    validate.set_defaults(func=_validate)
    test = commands.add_parser("test", help="run the test cases kept in each policy's tests/ folder")
    test.add_argument("dirs", nargs="+", metavar="DIR", help="a policy bundle or a directory of bundles")
    test.add_argument("-v", "--verbose", action="store_true", help="print passing cases too")
    test.set_defaults(func=_test)


def say(line: str) -> None:
    """Print one line; once the reader has gone (`policy test -v | head`), the rest goes nowhere, quietly: the
    run still finishes and its exit code still says whether the cases passed."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def bundles(directory: Path) -> Iterator[Path]:
    if (directory / POLICY_FILE).is_file():
        yield directory
        return
    for child in sorted(directory.iterdir()) if directory.is_dir() else ():
        if (child / POLICY_FILE).is_file():
            yield child


def validate(directory: Path, registry: DetectorRegistry) -> list[str]:
    """Problems with one bundle (empty when it loads and builds); also prints what it found. Every detector that
    does not build is reported, with the config's own errors (a bad `action`, `on_detector_error`, a key YAML reads
    as a number) and the flows' problems, not only the first: five errors, one run. Only a file that does not
    parse is reported alone."""
    load_errors: list[PolicyError] = []
    try:
        policy = load_policy(directory, errors=load_errors)
    except PolicyError as exc:
        return [*map(str, load_errors), str(exc)]
    # Unknown settings are errors here, not warnings as at load; build errors are collected, not raised.
    engine = Engine(policy, registry, log_unknown_settings=False, collect_errors=True)
    disabled, not_checked = disabled_problems(engine)
    flow_errors: list[PolicyError] = []
    flow_warnings: list[PolicyError] = []
    if engine.colang is not None or not policy.rails.has_custom_flows:  # else its build error is reported
        try:
            flow_errors, flow_warnings = flow_problems(engine)
        except PolicyError as exc:  # the runtime of flows no rail lists does not build
            flow_errors = [exc]
    problems = [str(problem) for problem in [*load_errors, *engine.build_errors, *engine.unknown_settings, *disabled,
                                             *flow_errors]]
    if problems:
        return problems
    custom = sorted({f for flows in policy.rails.custom.values() for f in flows})
    say(f"ok    {policy.id}@{policy.version}  colang {policy.rails.colang_version}, "
        f"{len(engine.slots)} detector(s), custom flows: {', '.join(custom) or 'none'}")
    idle = [] if engine.slots or policy.rails.has_custom_flows else [
        f"{policy.config_file}: the policy enables no detector and lists no flow in its rails, so every check "
        f"is allowed; is {POLICY_FILE} empty or unsaved?"]
    for warning in [*policy.warnings, *map(str, not_checked), *map(str, flow_warnings), *idle]:
        say(f"      warning: {warning}")
    return []


def disabled_problems(engine: Engine) -> tuple[list[PolicyError], list[PolicyError]]:
    """(errors, warnings) of the detectors the policy disables, each built with its settings and dropped (never
    added to `engine.slots`). A disabled name that is not installed is an error when it reads as a typo of an
    installed detector (`tool_polcy: false` leaves `tool_policy` on), else a warning: a plug-in absent from this
    machine, whose settings cannot be checked here, does not stop a policy that does not run it."""
    errors: list[PolicyError] = []
    warnings: list[PolicyError] = []
    for config in engine.policy.detectors:
        if config.enabled:
            continue
        if config.name not in engine.registry:
            problem, is_typo = _not_installed(engine, config)
            (errors if is_typo else warnings).append(problem)
        elif config.settings:  # `name: false` and a bare `enabled: false` have nothing to check
            errors += _disabled_settings(engine, config)
    return errors, warnings


def _not_installed(engine: Engine, config: DetectorConfig) -> tuple[PolicyError, bool]:
    """The problem with a disabled detector the registry lacks, and whether its name is a typo."""
    file = engine.policy.config_file or engine.policy.path
    close = difflib.get_close_matches(config.name, engine.registry.names(), n=1, cutoff=TYPO_CUTOFF)
    if close and config.name not in engine.registry.load_errors:
        return PolicyError(f"policy disables detector {config.name!r}, which is not installed; "
                           f"did you mean {close[0]!r}?", file, config.line), True
    reason = engine.registry.load_errors.get(config.name, "not installed")
    return PolicyError(f"policy disables detector {config.name!r}, which is unavailable here ({reason}): "
                       "its settings are not checked", file, config.line), False


def _disabled_settings(engine: Engine, config: DetectorConfig) -> list[PolicyError]:
    """What building a disabled detector reports: the settings it rejects, else those it does not read."""
    try:
        _, unknown = engine.build_detector(config)
    except PolicyError as exc:
        return [_while_disabled(exc)]
    return [_while_disabled(problem) for problem in unknown]


def _while_disabled(problem: PolicyError) -> PolicyError:
    # Says why a detector that does not run is reported: the error waits for the day it is enabled.
    return PolicyError(f"{problem.message} (the detector is disabled)", problem.file, problem.line)


def flow_problems(engine: Engine) -> tuple[list[PolicyError], list[PolicyError]]:
    """(errors, warnings) of the bundle's Colang flows. Errors: what they call that is not there (a mistyped
    action or flow), which the runtime would only report when a check runs the flow; flows no rail lists yet
    are checked too. Warnings: 2.x check variables a flow uses before declaring them `global`."""
    if not engine.policy.rails.colang_files:
        return [], []
    from guardrails.colang.bridge import ColangRails  # imports nemoguardrails: only for bundles with flows

    rails = engine.colang or ColangRails(engine)
    return rails.call_problems(), [*rails.global_warnings(), *unset_warnings(engine.policy),
                                   *unused_flow_warnings(engine.policy)]


def unset_warnings(policy: Policy) -> list[PolicyError]:
    """Variables a flow reads that nothing sets (`$bot_mesage`): empty at check time, so the flow never fires."""
    from guardrails.colang.unset import unset_reads
    from guardrails.colang.variables import VARIABLE_NAMES

    version = policy.rails.colang_version
    warnings = []
    for read in unset_reads(list(policy.rails.colang_files), version, VARIABLE_NAMES):
        if read.declared:  # a 2.x `global` nothing sets: reported at its declaration
            local = (f"; flow {read.local_in!r} assigns ${read.name} without declaring `global ${read.name}`, so "
                     f"that value stays in flow {read.local_in!r}" if read.local_in else "")
            fix = f"; did you mean ${read.suggestion}?" if read.suggestion else ""
            warnings.append(PolicyError(
                f"flow {read.flow!r} declares `global ${read.name}`, which nothing sets (not a check variable, no "
                f"flow assigns it as a global, no action returns it in context_updates): it is empty (None) at "
                f"check time, so an expression on it (`\"x\" in ${read.name}`) aborts the flow (a block) and an "
                f"action given it gets None (the flow judges nothing){local}{fix}", read.file, read.line))
            continue
        if version == "1.0":
            why = "not a check variable, and no flow of the bundle assigns it"
            fix = f"; did you mean ${read.suggestion}?" if read.suggestion else ""
        else:
            why = "not a check variable, and the flow neither assigns it nor declares it `global`"
            fix = (f"; did you mean ${read.suggestion} (declared first: `global ${read.suggestion}`)?"
                   if read.suggestion else "")
        warnings.append(PolicyError(f"flow {read.flow!r} reads ${read.name}, which nothing sets ({why}): it is "
                                    f"empty (None) at check time{fix}", read.file, read.line))
    return warnings


def unused_flow_warnings(policy: Policy) -> list[PolicyError]:
    """Flows of the bundle that no rail lists and no flow calls: they never run, whatever they say."""
    from guardrails.colang.parse import flow_calls, flow_line, flows_in

    files = list(policy.rails.colang_files)
    version = policy.rails.colang_version
    listed = {flow for flows in policy.rails.flows.values() for flow in flows}
    called = {call.name for call in flow_calls(files, version)}
    rails = ", ".join(f"rails.{rail}" for rail in RAIL_TYPES)
    return [PolicyError(f"flow {name!r} is defined but no rail lists it and no flow calls it, so it never runs; "
                        f"list it in {POLICY_FILE} under the rail it checks ({rails})", file, flow_line(file, name))
            for name, file in flows_in(files, version).items()
            if name not in listed and name not in called and not name.startswith("_")]


def _validate(args: argparse.Namespace) -> int:
    registry = DetectorRegistry.from_entry_points()
    failed = False
    for root in map(Path, args.dirs):
        found = list(bundles(root))
        for misnamed in misnamed_configs(root):
            say(f"error {misnamed}: the service reads {POLICY_FILE}, not {misnamed.name}: rename it (until then "
                f"there is no policy {misnamed.parent.name!r})")
            failed = True
        if not found and not failed:
            say(f"error {root}: no {POLICY_FILE} here or in its sub-directories")
            failed = True
        for directory in found:
            for problem in validate(directory, registry):
                say(f"error {problem}")
                failed = True
        if (root / ROUTING_FILE).is_file():
            problems = routing_problems(root, {b.name for b in found})
            for problem in problems:
                say(f"error {problem}")
            failed = failed or bool(problems)
    return EXIT_CONFIG if failed else EXIT_OK


def misnamed_configs(root: Path) -> list[Path]:
    """`config.yaml` (which NeMo reads too) in a bundle directory without a config.yml: no policy for us."""
    candidates = [root, *(sorted(root.iterdir()) if root.is_dir() else [])]
    return [directory / MISNAMED_CONFIG for directory in candidates
            if (directory / MISNAMED_CONFIG).is_file() and not (directory / POLICY_FILE).is_file()]


def routing_problems(root: Path, ids: set[str]) -> list[PolicyError]:
    """routing.yml does not load, or names policies that are not bundles of `root` (each at its line)."""
    file = root / ROUTING_FILE
    try:
        routing = load_routing(file)
    except PolicyError as exc:
        return [exc]
    return [PolicyError(f"names policy {missing!r}, which does not exist; bundles: {', '.join(sorted(ids)) or 'none'}",
                        file, routing.line_naming(missing))
            for missing in sorted(routing.policy_ids() - ids)]


def run_cases(directory: Path, registry: DetectorRegistry, verbose: bool = False) -> tuple[int, int]:
    """Run one bundle's test cases; returns (passed, failed). Raises PolicyError if the policy is broken."""
    from guardrails.service import CheckService

    service = CheckService(PolicyStore(directory.parent), registry, default_policy=directory.name)
    policy = service.policies.get(directory.name)
    service.engine_for(policy)
    cases = sorted((directory / TESTS_DIR).glob("*.json"))
    detectors = finding_detectors(policy, registry)

    async def run_all() -> list[list[str]]:  # one event loop: the Colang runtime is built for one
        return [await _run_case(service, directory.name, case_file, detectors) for case_file in cases]

    passed = failed = 0
    for case_file, problems in zip(cases, asyncio.run(run_all()), strict=True):
        label = f"{directory.name}/{TESTS_DIR}/{case_file.name}"
        if problems:
            failed += 1
            say(f"FAIL  {label}")
            for problem in problems:
                say(f"      {problem}")
        else:
            passed += 1
            if verbose:
                say(f"pass  {label}")
    return passed, failed


def finding_detectors(policy: Policy, registry: DetectorRegistry) -> list[str]:
    """The `detector` values a finding of this policy can carry: installed detectors, the custom flows its rails
    list, and `colang` (the runtime's own errors)."""
    flows = sorted({flow for flows in policy.rails.custom.values() for flow in flows})
    return [*registry.names(), *flows, *(["colang"] if flows else [])]


def expect_problems(expect: Mapping[str, Any], detectors: list[str], case_file: Path) -> list[str]:
    """What in `expect` no check can produce: it would always pass (`not_categories`) or always fail."""
    problems = []
    verdict = expect.get("verdict", VERDICTS[0])
    if verdict not in VERDICTS:
        problems.append(f"expect.verdict: {verdict!r} is not a verdict{choices_hint(verdict, VERDICTS)}")
    for key, valid, noun in (("categories", CATEGORIES, "category"), ("not_categories", CATEGORIES, "category"),
                             ("detectors", detectors, "detector or custom flow of this policy")):
        values = expect.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f'expect.{key} must be a list of strings, e.g. ["{valid[0]}"]')
            continue
        problems += [f"expect.{key}: {value!r} is not a {noun}{choices_hint(value, valid)}"
                     for value in values if value not in valid]
    return [f"{case_file}: {problem}" for problem in problems]


async def _run_case(service: Any, policy_id: str, case_file: Path, detectors: list[str]) -> list[str]:
    try:
        case = json.loads(case_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        return [f"not valid JSON: {exc}"]
    if not isinstance(case, dict) or not isinstance(case.get("check"), dict) or not isinstance(
            case.get("expect"), dict):
        return ['a test case is {"check": {...}, "expect": {"verdict": ...}}']
    expect = case["expect"]
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        return [f"unknown expect keys {sorted(unknown)}; expected {sorted(EXPECT_KEYS)}"]
    refused = expect_problems(expect, detectors, case_file)
    if refused:  # not run: a check cannot make such a case meaningful
        return refused
    body = {**case["check"], "policy": policy_id}
    try:
        result = await service.check(body)
    except GuardrailsError as exc:
        return [f"the check body was refused: {exc.type}: {exc.message}"]
    acting = [f for f in result["findings"] if f["action"] != "allow"]
    categories = {f["category"] for f in acting}
    detectors = {f["detector"] for f in acting}
    problems = []
    if "verdict" in expect and result["verdict"] != expect["verdict"]:
        problems.append(f"verdict {result['verdict']!r}, expected {expect['verdict']!r}")
    for category in expect.get("categories", []):
        if category not in categories:
            problems.append(f"no {category!r} finding")
    for category in expect.get("not_categories", []):
        if category in categories:
            problems.append(f"unexpected {category!r} finding")
    for detector in expect.get("detectors", []):
        if detector not in detectors:
            problems.append(f"no finding from {detector!r}")
    if problems:
        listed = "; ".join(f"[{f['action']}] {f['category']}/{f['detector']}: {f['message']}"
                           for f in result["findings"])
        problems.append(f"findings: {listed or 'none'}")
    return problems


def _test(args: argparse.Namespace) -> int:
    registry = DetectorRegistry.from_entry_points()
    total_passed = total_failed = 0
    broken = False
    for root in map(Path, args.dirs):
        for directory in bundles(root):
            try:
                passed, failed = run_cases(directory, registry, args.verbose)
            except PolicyError as exc:
                say(f"error {exc}")
                broken = True
                continue
            total_passed += passed
            total_failed += failed
    say(f"{total_passed} passed, {total_failed} failed")
    if broken:
        return EXIT_CONFIG
    return EXIT_FAILED if total_failed else EXIT_OK
