"""A policy author's walkthrough (a bank's strict policy: PII blocks, transfers over 1000 block, competitor names
warn), with the mistakes authors make. Each test is a mistake that used to ship a wrong policy silently or gave
an error that did not say what to fix: duplicate YAML keys, `enabled: "false"`, flows under `rails.dialog`, a
flow in the other Colang version's syntax, an awaited name that is neither action nor flow, a flow defined twice,
a misspelt variable, a flow no rail lists, an empty config.yml, a config.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle, validate

from guardrails.cli import EXIT_CONFIG, main
from guardrails.policy import PolicyError, load_policy, load_routing

EXIT_WARN, EXIT_BLOCK = 1, 2

BANK_CONFIG = """\
colang_version: "2.x"
models: []
rails:
  output:
    flows: [check pii, check competitor mention]
  tool_output:
    flows: [check transfer limit]
on_detector_error: block
detectors:
  pii:
    action: block
    entities: [EMAIL_ADDRESS, PHONE_NUMBER, IBAN_CODE]
"""
BANK_FLOWS = """\
# Transfers over 1000 need a human.
flow check transfer limit
  global $tool_calls
  $over = await TransferOverLimitAction(tool_calls=$tool_calls, limit=1000)
  if $over
    await BlockAction(reason="transfer_funds amount over 1000")

# Competitor names in the answer get a warning.
flow check competitor mention
  global $bot_message
  $name = await CompetitorMentionedAction(text=$bot_message)
  if $name != ""
    await WarnAction(reason="the answer mentions a competitor")
"""
BANK_ACTIONS = '''\
import json

from nemoguardrails.actions import action

COMPETITORS = ["Chase", "Wells Fargo", "Monzo"]


@action(name="TransferOverLimitAction")
async def transfer_over_limit(tool_calls=None, limit=1000):
    for call in tool_calls or []:
        function = call.get("function") or {}
        if function.get("name") == "transfer_funds":
            if float(json.loads(function.get("arguments") or "{}").get("amount", 0)) > limit:
                return True
    return False


@action(name="CompetitorMentionedAction")
async def competitor_mentioned(text=""):
    return next((name for name in COMPETITORS if name.lower() in (text or "").lower()), "")
'''
BANK_FLOWS_V1 = """\
define subflow check transfer limit
  $over = execute transfer_over_limit(tool_calls=$tool_calls, limit=1000)
  if $over
    execute block(reason="transfer_funds amount over 1000")
    stop

define subflow check competitor mention
  $name = execute competitor_mentioned(text=$bot_message)
  if $name != ""
    execute warn(reason="the answer mentions a competitor")
"""
V1_ACTIONS = BANK_ACTIONS.replace('"TransferOverLimitAction"', '"transfer_over_limit"').replace(
    '"CompetitorMentionedAction"', '"competitor_mentioned"')
TRANSFER_TOOL = {"type": "function", "function": {
    "name": "transfer_funds", "description": "Transfer money between the customer's accounts.",
    "parameters": {"type": "object", "required": ["from_account", "to_account", "amount"], "properties": {
        "from_account": {"type": "string"}, "to_account": {"type": "string"}, "amount": {"type": "number"}}}}}


def chat(answer: str | None = None, transfer: float | None = None) -> dict[str, Any]:
    """A teller agent's step for tenant `bank`: an answer, or a transfer_funds call."""
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if transfer is not None:
        arguments = json.dumps({"from_account": "CHK-1029", "to_account": "SAV-5531", "amount": transfer})
        message["tool_calls"] = [{"id": "call_7f3a", "type": "function",
                                  "function": {"name": "transfer_funds", "arguments": arguments}}]
    return {
        "request": {"model": "Qwen/Qwen3-8B", "tools": [TRANSFER_TOOL], "messages": [
            {"role": "system", "content": "You are the teller assistant of First Harbor Bank."},
            {"role": "user", "content": "Move 5000 from checking to savings, and who has better rates?"}]},
        "response": {"id": "chatcmpl-1", "object": "chat.completion", "model": "Qwen/Qwen3-8B", "choices": [
            {"index": 0, "finish_reason": "tool_calls" if transfer is not None else "stop", "message": message}]},
        "context": {"tenant": "bank", "agent_id": "teller-bot", "session_id": "s-1"},
    }


def check(root: Path, body: dict[str, Any], tmp_path: Path, *, policy: str | None = None) -> int:
    """`guardrails check --policy-dir ROOT body.json`: its exit code is the verdict (4: no policy)."""
    file = tmp_path / "body.json"
    file.write_text(json.dumps(body))
    return main(["check", "--policy-dir", str(root), *(["--policy", policy] if policy else []), str(file)])


@pytest.fixture
def policy_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy directory: `default` (no detector acts on PII) and the bank's `strict`, routed by tenant."""
    monkeypatch.setenv("GUARDRAILS_POLICY_DIR", str(tmp_path))  # `check --policy-dir` sets it: restored after
    monkeypatch.setenv("GUARDRAILS_DATA_DIR", str(tmp_path / "var"))
    root = tmp_path / "policies"
    bundle(root, "default", 'colang_version: "2.x"\nrails:\n  output:\n    flows: [check pii]\n')
    bundle(root, "strict", BANK_CONFIG, rails__co=BANK_FLOWS, actions__py=BANK_ACTIONS)
    (root / "routing.yml").write_text("tenants:\n  bank: strict\ndefault: default\n")
    return root


def test_the_bank_policy_works_end_to_end(policy_root: Path, tmp_path: Path) -> None:
    assert check(policy_root, chat(transfer=5000), tmp_path) == EXIT_BLOCK
    assert check(policy_root, chat(transfer=500), tmp_path) == 0
    assert check(policy_root, chat("Honestly, Wells Fargo pays more on savings."), tmp_path) == EXIT_WARN
    assert check(policy_root, chat("Write to jane.doe@firstharbor-bank.com for that."), tmp_path) == EXIT_BLOCK
    other = chat("Write to jane.doe@firstharbor-bank.com for that.")
    other["context"]["tenant"] = "retail"
    assert check(policy_root, other, tmp_path) == EXIT_WARN  # the default policy: PII warns


# --- duplicate YAML keys ---------------------------------------------------------------------------------


def test_a_second_tenants_key_in_routing_yml_is_an_error_not_a_dropped_route(
        policy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: YAML kept the second `tenants:`, bank fell to the default policy, and PII only warned.
    routing = "tenants:\n  bank: strict\ndefault: default\ntenants:\n  retail: default\n"
    (policy_root / "routing.yml").write_text(routing)
    with pytest.raises(PolicyError) as raised:
        load_routing(policy_root / "routing.yml")
    assert raised.value.line == 4 and "duplicate key 'tenants' (also on line 1)" in raised.value.message
    code, out = validate(policy_root, capsys)
    assert code == EXIT_CONFIG and "routing.yml:4: duplicate key 'tenants'" in out
    assert check(policy_root, chat("Write to jane.doe@firstharbor-bank.com for that."), tmp_path) == EXIT_CONFIG


def test_a_detector_listed_twice_is_an_error_not_settings_silently_dropped(policy_root: Path) -> None:
    # Before: the second `pii:` replaced the first, entities and all, without a word.
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text() + "  secret: {}\n  pii:\n    score_threshold: 0.5\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert raised.value.line == 14 and "duplicate key 'pii' (also on line 10)" in raised.value.message


def test_yaml_merge_keys_still_override() -> None:
    from guardrails.policy_yaml import safe_load_unique

    text = "base: &base {action: warn, timeout_ms: 500}\npii:\n  <<: *base\n  action: block\n"
    assert safe_load_unique(text)["pii"] == {"action": "block", "timeout_ms": 500}


# --- settings of the wrong type ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['"false"', '"no"', "0", "off-ish"])
def test_enabled_must_be_a_boolean(policy_root: Path, tmp_path: Path, value: str) -> None:
    # Before: bool("false") is True, so `enabled: "false"` left the detector on.
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text().replace("    action: block\n", f"    enabled: {value}\n    action: block\n"))
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert "detector 'pii': enabled must be true or false" in raised.value.message and raised.value.line == 11
    assert check(policy_root, chat("Write to jane.doe@firstharbor-bank.com for that."), tmp_path) == EXIT_CONFIG


# --- flows that never run, or are not found ----------------------------------------------------------------


def test_flows_under_rails_dialog_are_refused(policy_root: Path) -> None:
    # Before: accepted, and the transfer flow silently never ran.
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text().replace("  tool_output:\n", "  dialog:\n"))
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert raised.value.message.startswith("rails.dialog.flows: this service runs no dialog rails")
    assert "rails.tool_output" in raised.value.message and raised.value.line == 6


def test_a_flow_in_colang_1_syntax_in_a_2x_policy_is_named_as_such(policy_root: Path) -> None:
    # Before: "unknown flow ... not defined in the policy's .co files", of a flow the author can see there.
    flows = policy_root / "strict" / "rails.co"
    flows.write_text(flows.read_text().replace("flow check competitor mention", "define flow check competitor mention"))
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert "rails.co:9 defines it in Colang 1.0 syntax (`define flow`)" in raised.value.message
    assert 'colang_version is "2.x"' in raised.value.message


def test_2x_flows_in_a_policy_without_colang_version_are_named_as_such(policy_root: Path) -> None:
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text().replace('colang_version: "2.x"\n', ""))
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert "rails.co:9 defines it in Colang 2.x syntax" in raised.value.message
    assert "(the default: config.yml does not set it)" in raised.value.message


def test_an_awaited_name_that_is_no_action_is_a_validate_error(
        policy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: validate said ok; at check time the runtime failed on the "event", so the transfer flow (and every
    # other custom flow) never ran: an over-limit transfer got a detector_error, not the flow's block.
    flows = policy_root / "strict" / "rails.co"
    flows.write_text(flows.read_text().replace("TransferOverLimitAction(", "TransferOverLimitActoin("))
    code, out = validate(policy_root, capsys)
    assert code == EXIT_CONFIG
    assert ("rails.co:4: flow 'check transfer limit': calls 'TransferOverLimitActoin', which is neither an "
            "action") in out
    assert "did you mean 'TransferOverLimitAction'?" in out


def test_a_flow_defined_twice_is_an_error_with_both_places(
        policy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before (Colang 1.0): a stale copy in rails_old.co silently replaced the flow, and a 5000 transfer passed.
    strict = policy_root / "strict"
    (strict / "config.yml").write_text(BANK_CONFIG.replace('"2.x"', '"1.0"'))
    (strict / "actions.py").write_text(V1_ACTIONS)
    (strict / "rails.co").write_text(BANK_FLOWS_V1)
    assert check(policy_root, chat(transfer=5000), tmp_path) == EXIT_BLOCK
    (strict / "rails_old.co").write_text(BANK_FLOWS_V1.split("\n\n")[0].replace("limit=1000", "limit=100000") + "\n")
    code, out = validate(policy_root, capsys)
    assert code == EXIT_CONFIG
    assert ("rails_old.co:1: flow 'check transfer limit' is defined twice (first at rails.co:1); only one of them "
            "would run") in out
    assert check(policy_root, chat(transfer=5000), tmp_path) == EXIT_CONFIG


def test_a_2x_override_may_define_a_flow_again(policy_root: Path) -> None:
    flows = policy_root / "strict" / "rails.co"
    flows.write_text(flows.read_text() + '\n@override\nflow check competitor mention\n  await WarnAction(reason="x")\n')
    assert load_policy(policy_root / "strict").rails.custom["output"] == ("check competitor mention",)


# --- validate warnings: what runs nothing -----------------------------------------------------------------


@pytest.mark.parametrize(("version", "typo", "expected"), [
    ("2.x", "$last_bot_message", "did you mean $bot_message (declared first: `global $bot_message`)?"),
    ("1.0", "$bot_mesage", "did you mean $bot_message?"),
])
def test_a_misspelt_variable_is_a_validate_warning(policy_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str], version: str, typo: str,
                                                  expected: str) -> None:
    # Before: no word; the variable is None, the competitor flow never warned.
    strict = policy_root / "strict"
    if version == "1.0":
        (strict / "config.yml").write_text(BANK_CONFIG.replace('"2.x"', '"1.0"'))
        (strict / "actions.py").write_text(V1_ACTIONS)
        (strict / "rails.co").write_text(BANK_FLOWS_V1)
    flows = strict / "rails.co"
    flows.write_text(flows.read_text().replace("text=$bot_message", f"text={typo}"))
    assert check(policy_root, chat("Honestly, Wells Fargo pays more on savings."), tmp_path) == 0
    code, out = validate(policy_root, capsys)
    assert code == 0
    assert f"flow 'check competitor mention' reads {typo}, which nothing sets" in out and expected in out


def test_no_unset_variable_warnings_for_the_example_policies(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(Path(__file__).resolve().parent.parent / "policies", capsys)
    assert code == 0 and "warning" not in out, out


def test_a_flow_no_rail_lists_is_a_validate_warning(policy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text().replace("check pii, check competitor mention", "check pii"))
    code, out = validate(policy_root, capsys)
    assert code == 0
    assert ("rails.co:9: flow 'check competitor mention' is defined but no rail lists it and no flow calls it, so "
            "it never runs") in out


def test_an_empty_config_is_a_validate_warning(policy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (policy_root / "strict" / "config.yml").write_text("# bank policy: TODO\n")
    code, out = validate(policy_root, capsys)
    assert code == 0
    assert "strict/config.yml: the policy enables no detector and lists no flow in its rails, so every check is " \
           "allowed" in out


def test_a_config_yaml_is_named_by_validate(policy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the bundle was skipped unseen; only routing.yml's "names policy 'strict', which does not exist".
    (policy_root / "strict" / "config.yml").rename(policy_root / "strict" / "config.yaml")
    code, out = validate(policy_root, capsys)
    assert code == EXIT_CONFIG
    assert "strict/config.yaml: the service reads config.yml, not config.yaml: rename it" in out


def test_the_2x_global_warning_says_an_action_argument_is_none(
        policy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The warning said the flow aborts; given to an action, the variable is None and the flow allows.
    flows = policy_root / "strict" / "rails.co"
    flows.write_text(flows.read_text().replace("  global $bot_message\n", ""))
    assert check(policy_root, chat("Honestly, Wells Fargo pays more on savings."), tmp_path) == 0
    code, out = validate(policy_root, capsys)
    assert code == 0 and "an action given it gets None, so the flow judges nothing (an allow)" in out
