"""Defects found by working through the shipped policy and audit tooling as a policy author and as an auditor.

Each test replays what the user did: edit a served bundle, write a custom Colang flow, keep an extra rules
file in the bundle, export and verify the audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle

from guardrails.adapters import read_exchange
from guardrails.audit import AuditFilter, open_audit_store, parse_time
from guardrails.audit.record import build_record
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry
from guardrails.engine import Engine
from guardrails.findings import Action, Category
from guardrails.policy import PolicyError, PolicyStore, load_policy
from guardrails.serve import build_service
from guardrails.service import CheckOutcome, CheckService

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": f"my key is {TOKEN}"}]}
GOOD = "rails:\n  input:\n    flows: [check secrets]\n"


def answer(content: str, reasoning: str | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}


# --- A. the policy author -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "files", "where", "needle"),
    [
        # a typo in a detector name: the YAML loads, the detectors do not build
        (GOOD + "detectors:\n  secrets: {min_entropy: 3.0}\n", {}, "config.yml:5", "'secrets'"),
        # a setting of the wrong type, rejected by the detector itself
        (GOOD + "detectors:\n  pii:\n    score_threshold: high\n", {}, "config.yml:5", "'pii'"),
        # a Colang 2.x policy that defines `flow main` (NeMo's runtime is built, then refused)
        ("colang_version: '2.x'\nrails:\n  input:\n    flows: [check secrets, my flow]\n",
         {"rails__co": "flow main\n  await my flow\n\nflow my flow\n  await WarnAction(reason='x')\n"},
         "rails.co", "flow main"),
    ],
    ids=["unknown-detector", "wrong-type", "colang-flow-main"],
)
def test_an_edit_whose_detectors_or_flows_do_not_build_keeps_the_last_good_version(
    tmp_path: Path, config: str, files: dict[str, str], where: str, needle: str
) -> None:
    directory = bundle(tmp_path, "default", GOOD)
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), DetectorRegistry.from_entry_points())
    first = asyncio.run(service.check({"request": REQUEST}))
    assert first["verdict"] == "block"

    bundle(tmp_path, "default", config, **files)
    second = asyncio.run(service.check({"request": REQUEST}))  # was a 500 for every check of the policy
    assert second["policy"] == first["policy"] and second["verdict"] == "block"
    report = service.readiness()
    assert report["ready"] is True and "policy:default" not in report["problems"]
    problem = report["problems"]["reload:default"]
    assert f"kept version {first['policy']['version']}" in problem
    assert where in problem and needle in problem

    for name in files:
        (directory / name.replace("__", ".")).unlink()
    (directory / "config.yml").write_text("detectors: {}\n")  # fixed: the next version serves
    third = asyncio.run(service.check({"request": REQUEST}))
    assert third["verdict"] == "allow" and third["policy"]["version"] != first["policy"]["version"]
    assert "reload:default" not in service.readiness()["problems"]


def test_policy_validate_names_the_file_and_line_of_a_detector_that_does_not_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle(tmp_path, "p", "on_detector_error: warn\ndetectors:\n  secret: {}\n  tool_loop:\n    max_repeats: three\n")
    assert main(["policy", "validate", str(tmp_path)]) == 4
    out = capsys.readouterr().out
    assert f"{tmp_path / 'p' / 'config.yml'}:4: detector 'tool_loop' rejected its settings" in out


@pytest.mark.parametrize(
    ("detector", "file_setting", "file_text", "trace", "rule"),
    [
        ("unsafe_reasoning", "rules_file",
         "rules:\n- id: sell_user_data\n  category: exfiltration\n  severity: high\n"
         "  description: plans to sell user data\n  pattern: \\bsell\\s+(?:the\\s+)?user\\s+data\\b\n",
         "Next, I will sell the user data to a broker.", "sell_user_data"),
    ],
)
def test_a_relative_rules_file_is_read_from_the_bundle_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detector: str, file_setting: str, file_text: str,
    trace: str, rule: str,
) -> None:
    directory = bundle(tmp_path, "p", f"detectors:\n  {detector}:\n    {file_setting}: extra_rules.yml\n",
                       extra_rules__yml=file_text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `guardrails serve` runs from wherever the operator started it
    engine = Engine(load_policy(directory), DetectorRegistry.from_entry_points())
    exchange = read_exchange({"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                             answer("Done.", reasoning=trace))
    result = asyncio.run(engine.run(exchange))
    assert [f.evidence.get("rule") for f in result.findings if f.detector == detector] == [rule]


def test_a_relative_jailbreak_model_file_is_read_from_the_bundle(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors import jailbreak_model

    directory = bundle(tmp_path, "p", "detectors:\n  jailbreak:\n    model_file: weights.json\n",
                       weights__json=jailbreak_model.MODEL_FILE.read_text(encoding="utf-8"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    engine = Engine(load_policy(directory), DetectorRegistry.from_entry_points())  # raised FileNotFoundError
    assert engine.slots[0].detector.name == "jailbreak"


# Custom flows whose actions fail or do not exist. on_detector_error is warn, so a runtime failure that
# turned into a `custom` block (or into nothing) is told apart from the documented detector_error.
ACTIONS_PY = """
from nemoguardrails.actions import action


@action(name="refund_over_limit")
async def refund_over_limit() -> bool:
    raise RuntimeError("the refunds service is down")


@action(name="RefundOverLimitAction")
async def refund_over_limit_v2() -> bool:
    raise RuntimeError("the refunds service is down")
"""
V1_FLOWS = """
define subflow check refunds
  if "refund" in $bot_message
    $over = execute refund_over_limit()
    if $over
      execute block(reason="refund over the limit")
      stop
  if "typo" in $bot_message
    $x = execute detect_secrets()
"""
V2_FLOWS = """
flow check refunds
  global $bot_message
  if "refund" in $bot_message
    $over = await RefundOverLimitAction()
    if $over
      await BlockAction(reason="refund over the limit")
  if "typo" in $bot_message
    $x = await DetectSecretsAction()
"""


@pytest.fixture(scope="module", params=["1.0", "2.x"])
def colang(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    directory = tmp_path_factory.mktemp(f"colang{request.param}") / "p"
    bundle(directory.parent, "p", f"colang_version: '{request.param}'\nmodels: []\n"
           "rails:\n  output: {flows: [check refunds]}\non_detector_error: warn\n",
           rails__co=V1_FLOWS if request.param == "1.0" else V2_FLOWS, actions__py=ACTIONS_PY)
    return Engine(load_policy(directory), DetectorRegistry.from_entry_points())


def colang_run(engine: Engine, content: str) -> Any:
    exchange = read_exchange({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, answer(content))
    return asyncio.run(engine.run(exchange))


@pytest.mark.parametrize(("content", "needle"), [
    ("your refund is on its way", "refund_over_limit"),  # v2 failed open: the flow went on with None
    ("a typo in an action name", "detect_secrets"),       # both blocked as `custom`, named nothing useful
])
def test_a_failing_or_unknown_action_in_a_custom_flow_is_a_detector_error(
    colang: Engine, content: str, needle: str
) -> None:
    result = colang_run(colang, content)
    errors = [f for f in result.findings if f.category is Category.DETECTOR_ERROR]
    assert [f for f in result.findings if f.category is Category.CUSTOM] == []
    assert len(errors) == 1 and errors[0].action is Action.WARN
    assert needle.replace("_", "") in errors[0].message.replace("_", "").lower()
    assert result.verdict is Action.WARN
    assert colang_run(colang, "all fine").findings == []  # the runtime still serves the next check


# --- B. the auditor -----------------------------------------------------------------------------------


def audit_settings(tmp_path: Path, content: str = "none") -> Settings:
    bundle(tmp_path / "policies", "default", "detectors:\n  secret: {}\n  pii: {}\n")
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", audit_content=content)


def stream(*pieces: str) -> list[dict[str, Any]]:
    chunks = [{"id": "c1", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None}]}
              for p in pieces]
    return [*chunks, {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                      "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


def test_redacted_content_hides_a_secret_split_across_stream_chunks(tmp_path: Path) -> None:
    service = build_service(audit_settings(tmp_path, "redacted"))
    body = {"request": {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            "response": stream("Here is the key ", TOKEN[:20], TOKEN[20:], " and mail jane.", "doe@example.com ok")}
    result = asyncio.run(service.check(body))
    assert {f["category"] for f in result["findings"]} == {"secret", "pii"}
    store = open_audit_store(f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}")
    (row,) = store.iter_records()
    store.close()
    assert TOKEN[20:] not in row.body.decode() and "doe@example.com" not in row.body.decode()
    [assistant] = [s for s in row.record()["content"]["segments"] if s["kind"] == "assistant"]
    assert assistant["text"] == "Here is the key [secret] and mail [pii] ok"


def test_a_records_own_time_selects_it_with_since_and_excludes_it_with_until(tmp_path: Path) -> None:
    service = build_service(audit_settings(tmp_path))
    outcomes: list[CheckOutcome] = []

    async def keep(outcome: CheckOutcome) -> None:
        outcomes.append(outcome)

    service.observers = [keep]
    asyncio.run(service.check({"request": REQUEST}))
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    # time.time() has sub-microsecond digits; the record shows microseconds. These two round up.
    for received_at in (1795280428.4790215, 1795280428.5152998):
        record = build_record(dataclasses.replace(outcomes[0], received_at=received_at))
        seq = asyncio.run(store.append(record))
        moment = parse_time(record["time"])
        assert seq in [r.seq for r in store.iter_records(AuditFilter(since=moment))]
        assert seq not in [r.seq for r in store.iter_records(AuditFilter(until=moment))]
        assert seq in [r.seq for r in store.iter_records(AuditFilter(since=moment, until=moment + 1e-6))]
    assert store.verify().ok
    store.close()


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "export"]])
def test_audit_commands_on_a_missing_store_fail_instead_of_creating_an_empty_one(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone" / "audit.sqlite3"  # a typo in the path, or a log someone deleted
    assert main([*command, "--url", f"sqlite:///{missing}"]) == 4
    assert "OK" not in capsys.readouterr().out
    assert not missing.exists() and not missing.parent.exists()


def test_audit_verify_still_reads_an_existing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = build_service(audit_settings(tmp_path))
    asyncio.run(service.check({"request": REQUEST}))
    assert main(["audit", "verify", "--url", f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 record(s)")


def test_engine_errors_are_policy_errors_with_the_config_file(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  nope: {}\n")
    with pytest.raises(PolicyError) as raised:
        Engine(load_policy(directory), DetectorRegistry.from_entry_points())
    assert raised.value.file == str(directory / "config.yml") and raised.value.line == 2
