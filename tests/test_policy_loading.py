"""Policy bundles: validation with file and line, built-in rails, selection by agent/tenant, reload."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from policy_bundles import bundle

from guardrails.adapters import read_exchange
from guardrails.adapters.base import TRUST_BY_KIND
from guardrails.detector import DetectorRegistry
from guardrails.engine import Engine
from guardrails.exchange import Phase, Segment
from guardrails.findings import Action, Category
from guardrails.policy import PolicyError, PolicyStore, load_policy, policy_from_mapping
from guardrails.service import CheckService

REPO = Path(__file__).resolve().parent.parent
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE"}]}
ANSWER = {
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Stored AKIAIOSFODNN7EXAMPLE for you."},
        }
    ]
}


@pytest.mark.parametrize(
    ("config", "line", "needle"),
    [
        ("colang_version: '1.0'\nrails: {}\nsurprise: 1\n", 3, "unknown key 'surprise'"),
        (
            "rails:\n  input:\n    flows: [check pii]\n  outptu:\n    flows: []\n",
            4,
            "unknown rails section 'outptu'",
        ),
        (
            "rails:\n  input:\n    flows:\n      - check pii\n      - check spelling\n",
            5,
            "unknown flow 'check spelling'",
        ),
        ("detectors:\n  pii: {action: destroy}\n", 2, "detector 'pii'"),
        ("detectors:\n  pii: [1, 2\n", 3, "YAML error"),
        ("colang_version: '3'\n", 1, "colang_version"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, config: str, line: int, needle: str) -> None:
    directory = bundle(tmp_path, "p", config)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert needle in caught.value.message
    assert caught.value.file == str(directory / "config.yml")
    assert caught.value.line == line


@pytest.mark.parametrize(
    ("version", "source", "line"),
    [
        ("1.0", "define subflow ok\n  stop\n\ndefine fl0w broken\n  stop\n", 4),
        ("2.x", "flow ok\n  $x = 1\n\nflow broken\n  await SomethingAction(\n", 5),
    ],
)
def test_colang_syntax_errors_name_file_and_line(
    tmp_path: Path, version: str, source: str, line: int
) -> None:
    directory = bundle(tmp_path, "p", f"colang_version: '{version}'\nmodels: []\n", rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert caught.value.file == str(directory / "rails.co")
    assert caught.value.line == line
    assert "Colang syntax error" in caught.value.message


def test_builtin_flows_enable_their_detector_and_narrow_it_to_the_rail(tmp_path: Path) -> None:
    # `check secrets` only on input: the key in the user message is found, the one in the answer is not.
    policy = load_policy(bundle(tmp_path, "p", "rails:\n  input:\n    flows: [check secrets]\n"))
    assert policy.detector("secret").rail_types == {"input"}
    assert not policy.rails.has_custom_flows
    result = asyncio.run(
        Engine(policy, DetectorRegistry.from_entry_points()).run(read_exchange(REQUEST, ANSWER))
    )
    assert [f.pointer for f in result.findings] == ["/request/messages/0/content"]
    assert result.verdict is Action.BLOCK


def test_a_detector_set_to_false_wins_over_its_flow(tmp_path: Path) -> None:
    policy = load_policy(
        bundle(tmp_path, "p", "rails:\n  output:\n    flows: [check secrets]\ndetectors:\n  secret: false\n")
    )
    assert policy.detector("secret").enabled is False
    assert policy.warnings and "secret" in policy.warnings[0]


def test_a_flow_on_a_rail_its_detector_cannot_see_is_an_error(tmp_path: Path) -> None:
    policy = load_policy(bundle(tmp_path, "p", "rails:\n  input:\n    flows: [check tool schema]\n"))
    with pytest.raises(PolicyError, match="cannot look at any segment"):
        Engine(policy, DetectorRegistry.from_entry_points())


def test_default_policy_lists_builtin_flows_without_changing_detector_scopes() -> None:
    policy = load_policy(REPO / "policies" / "default")
    registry = DetectorRegistry.from_entry_points()
    engine = Engine(policy, registry)
    assert engine.colang is None
    segments = [
        Segment(index=0, kind=kind, role=kind.value, trust=trust, turn=0, phase=phase, text="x", pointer="")
        for kind, trust in TRUST_BY_KIND.items()
        for phase in Phase
    ]
    routed = [slot for slot in engine.slots if slot.config.rail_types and slot.config.scope is None]
    assert {"pii", "secret", "tool_undeclared", "tool_call_leak"} <= {slot.config.name for slot in routed}
    for slot in routed:
        default = registry.get(slot.config.name).default_scope
        assert [default.matches(s) for s in segments] == [slot.scope.matches(s) for s in segments], (
            slot.config.name
        )


def test_builtin_only_policy_never_imports_nemoguardrails() -> None:
    code = (
        "import asyncio, sys\n"
        "from guardrails.policy import load_policy\n"
        "from guardrails.engine import Engine\n"
        "from guardrails.detector import DetectorRegistry\n"
        "from guardrails.adapters import read_exchange\n"
        f"policy = load_policy({str(REPO / 'policies' / 'default')!r})\n"
        "engine = Engine(policy, DetectorRegistry.from_entry_points())\n"
        f"asyncio.run(engine.run(read_exchange({REQUEST!r}, {ANSWER!r})))\n"
        "assert 'nemoguardrails' not in sys.modules, 'nemoguardrails imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_inline_policy_from_mapping() -> None:
    policy = policy_from_mapping({"rails": {"output": {"flows": ["check secrets"]}}})
    assert policy.id == "inline" and len(policy.version) == 12
    assert policy.detector("secret").rail_types == {"output"}
    with pytest.raises(PolicyError, match="unknown flow"):
        policy_from_mapping({"rails": {"output": {"flows": ["self check output"]}}})


# --- selection and reload -----------------------------------------------------------------------------


def service_over(root: Path) -> CheckService:
    return CheckService(PolicyStore(root, check_interval_s=0), DetectorRegistry.from_entry_points())


def test_routing_selects_by_agent_then_tenant_and_the_body_wins(tmp_path: Path) -> None:
    bundle(tmp_path, "default", "detectors: {}\n")
    bundle(tmp_path, "strict", "rails:\n  input:\n    flows: [check secrets]\n")
    bundle(tmp_path, "lenient", "detectors: {}\n")
    (tmp_path / "routing.yml").write_text(
        "agents:\n  ops-bot: strict\ntenants:\n  acme: lenient\n  bank: strict\n"
    )
    service = service_over(tmp_path)

    def verdict(**body: object) -> tuple[str, str]:
        result = asyncio.run(service.check({"request": REQUEST, **body}))
        return result["policy"]["id"], result["verdict"]

    assert verdict() == ("default", "allow")
    assert verdict(context={"agent_id": "ops-bot", "tenant": "acme"}) == ("strict", "block")
    assert verdict(context={"tenant": "acme"}) == ("lenient", "allow")
    assert verdict(context={"tenant": "bank"}) == ("strict", "block")
    assert verdict(context={"tenant": "bank"}, policy="default") == ("default", "allow")


def test_reload_swaps_versions_and_keeps_the_last_good_one_on_a_broken_edit(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "default", "detectors: {}\n")
    service = service_over(tmp_path)
    first = asyncio.run(service.check({"request": REQUEST}))
    assert first["verdict"] == "allow"

    (directory / "config.yml").write_text("rails:\n  input:\n    flows: [check secrets]\n")
    second = asyncio.run(service.check({"request": REQUEST}))
    assert second["verdict"] == "block"
    assert second["policy"]["version"] != first["policy"]["version"]

    (directory / "config.yml").write_text("rails:\n  input:\n    flows: [check secrets]\nbogus: 1\n")
    third = asyncio.run(service.check({"request": REQUEST}))
    assert third["policy"]["version"] == second["policy"]["version"] and third["verdict"] == "block"
    report = service.readiness()
    assert report["ready"] is True
    assert (
        "bogus" in report["problems"]["reload:default"]
        and "config.yml:4" in report["problems"]["reload:default"]
    )

    (directory / "config.yml").write_text("detectors: {}\n")
    assert asyncio.run(service.check({"request": REQUEST}))["verdict"] == "allow"
    assert "reload:default" not in service.readiness()["problems"]


def test_reload_is_throttled(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "default", "detectors: {}\n")
    store = PolicyStore(tmp_path, check_interval_s=3600)
    before = store.get("default")
    (directory / "config.yml").write_text("rails:\n  input:\n    flows: [check secrets]\n")
    assert store.get("default") is before  # not re-read within the interval


def test_routing_to_a_missing_policy_is_reported(tmp_path: Path) -> None:
    bundle(tmp_path, "default", "detectors: {}\n")
    (tmp_path / "routing.yml").write_text("agents:\n  a: nowhere\n")
    assert "routing:nowhere" in service_over(tmp_path).readiness()["problems"]


def test_test_cases_do_not_change_the_policy_version(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", "detectors: {}\n")
    version = load_policy(directory).version
    (directory / "tests").mkdir()
    (directory / "tests" / "case.json").write_text("{}")
    assert load_policy(directory).version == version
    shutil.rmtree(directory / "tests")
    (directory / "extra.co").write_text("define subflow x\n  stop\n")
    assert load_policy(directory).version != version


def test_custom_finding_category_exists() -> None:
    assert Category.CUSTOM.value == "custom"
