"""A policy author's walkthrough (a bank's strict policy: PII blocks, transfers over 1000 block, competitor names
warn), with the mistakes authors make. Each test is a mistake that used to ship a wrong policy silently or gave
an error that did not say what to fix: duplicate YAML keys, `enabled: "false"`, flows under `rails.dialog`, a
flow in the other Colang version's syntax, an awaited name that is neither action nor flow, a flow defined twice,
a misspelt variable, a flow no rail lists, an empty config.yml, a config.yaml."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle, validate

from guardrails.cli import EXIT_CONFIG, main
from guardrails.detector import DetectorRegistry
from guardrails.engine import Engine
from guardrails.exchange import CallerContext
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


# --- second review: silent misreadings and incomplete messages ---------------------------------------------------
# Each test failed before its fix: YAML 1.1 keys read as numbers or booleans, typos in nested settings ignored,
# rules_file errors without a place, validate stopping at the first detector error, a rejected reload seen only on
# /readyz, actions that cannot import a sibling module without saying why, an unknown action named without the one
# meant.


def ok_validate(root: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The `error` lines of `guardrails policy validate ROOT`, which must exit 4."""
    code, out = validate(root, capsys)
    assert code == EXIT_CONFIG, out
    return [line for line in out.splitlines() if line.startswith("error ")]


@pytest.mark.parametrize(("key", "message"), [
    ("007", "tenant key 007 is read by YAML as the number 7: quote it ('007')"),
    ("off", "tenant key off is read by YAML as the boolean false: quote it ('off')"),
    ("0x1F", "tenant key 0x1F is read by YAML as the number 31: quote it ('0x1F')"),
    ("2024-01-01", "tenant key 2024-01-01 is read by YAML as the date 2024-01-01: quote it ('2024-01-01')"),
])
def test_a_routing_key_yaml_reads_as_a_number_or_boolean_is_an_error(
        policy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, message: str) -> None:
    # Before: `007:` routed tenant "7" and "007" fell to the default policy; `off:` matched tenant "False".
    (policy_root / "routing.yml").write_text(f"default: default\ntenants:\n  bank: strict\n  {key}: strict\n")
    with pytest.raises(PolicyError) as raised:
        load_routing(policy_root / "routing.yml")
    assert (raised.value.message, raised.value.line) == (message, 4)
    assert f"error {policy_root / 'routing.yml'}:4: {message}" in ok_validate(policy_root, capsys)
    (policy_root / "routing.yml").write_text(f"default: default\ntenants:\n  bank: strict\n  '{key}': strict\n")
    routing = load_routing(policy_root / "routing.yml")
    assert routing.route(CallerContext(tenant=key)) == "strict"


def test_an_unquoted_tenant_007_is_refused_and_the_quoted_one_routes(policy_root: Path, tmp_path: Path) -> None:
    (policy_root / "routing.yml").write_text("tenants: {007: strict}\ndefault: default\n")
    pii = chat("Write to jane.doe@firstharbor-bank.com for that.")
    pii["context"]["tenant"] = "007"
    assert check(policy_root, pii, tmp_path) == EXIT_CONFIG  # before: the default policy, whose PII only warns
    (policy_root / "routing.yml").write_text("tenants: {'007': strict}\ndefault: default\n")
    assert check(policy_root, pii, tmp_path) == EXIT_BLOCK  # strict: PII blocks


@pytest.mark.parametrize(("entry", "message", "line"), [
    ("  tool_policy:\n    agents:\n      007: {deny_tools: [wire_money]}\n",
     "detectors.tool_policy.agents: agent key 007 is read by YAML as the number 7: quote it ('007')", 15),
    ("  tool_policy:\n    agents:\n      on: {deny_tools: [wire_money]}\n",
     "detectors.tool_policy.agents: agent key on is read by YAML as the boolean true: quote it ('on')", 15),
    ("  tool_policy:\n    tools:\n      1099: {arguments: {amount: {type: number, max: 10}}}\n",
     "detectors.tool_policy.tools: tool key 1099 is read by YAML as the number 1099: quote it ('1099')", 15),
    ("  content:\n    topics: {1984: [doublethink]}\n",
     "detectors.content.topics: topic key 1984 is read by YAML as the number 1984: quote it ('1984')", 14),
    ("  secret:\n    severity: {null: high}\n",
     "detectors.secret.severity: key null is read by YAML as null (no name at all): quote it ('null')", 14),
    ("  secret:\n    true: 1\n",
     "detectors.secret: setting key true is read by YAML as the boolean true: quote it ('true')", 14),
])
def test_a_detector_key_yaml_reads_as_a_number_or_boolean_is_an_error(
        policy_root: Path, entry: str, message: str, line: int) -> None:
    # Before: a deny rule keyed `007:` was the agent "7": agent 007 called wire_money unchecked.
    config = policy_root / "strict" / "config.yml"
    config.write_text(BANK_CONFIG + entry)
    with pytest.raises(PolicyError) as raised:
        load_policy(policy_root / "strict")
    assert (raised.value.message, raised.value.line) == (message, line)


def test_an_inline_config_with_a_non_string_agent_key_is_refused() -> None:
    from detectors.tool_policy.detector import ToolPolicyDetector
    from guardrails.detector import SettingError
    from guardrails.policy import policy_from_mapping

    inline = {"detectors": {"tool_policy": {"agents": {7: {"deny_tools": ["wire_money"]}}}}}
    with pytest.raises(PolicyError, match=r"detectors.tool_policy.agents: agent key 7 is not a string"):
        policy_from_mapping(inline)
    with pytest.raises(SettingError, match="agent key 7 is not a string: quote it"):
        ToolPolicyDetector({"agents": {7: {"deny_tools": ["wire_money"]}}})


def test_an_unquoted_agent_007_is_refused_and_the_quoted_one_is_denied(policy_root: Path, tmp_path: Path) -> None:
    config = policy_root / "strict" / "config.yml"
    config.write_text(config.read_text() + "  tool_policy:\n    agents:\n      007: {deny_tools: [transfer_*]}\n")
    body = chat(transfer=10)
    body["context"]["agent_id"] = "007"
    assert check(policy_root, body, tmp_path) == EXIT_CONFIG  # before: allowed, the rule was agent "7"'s
    config.write_text(config.read_text().replace("007:", "'007':"))
    body["context"]["agent_id"] = "teller-bot"
    assert check(policy_root, body, tmp_path) == 0  # teller-bot: not denied
    body["context"]["agent_id"] = "007"
    assert check(policy_root, body, tmp_path) == EXIT_BLOCK


def build(root: Path, config: str, **files: str) -> Engine:
    return Engine(load_policy(bundle(root, "p", config, **files)), DetectorRegistry.from_entry_points())


@pytest.mark.parametrize(("topic", "message"), [
    ("{term: [napalm], severity: high}", "content.topics.weapons: unknown key 'term'; did you mean 'terms'?"),
    ("{terms: [napalm], severty: high}", "content.topics.weapons: unknown key 'severty'; did you mean 'severity'?"),
    ("{terms: [napalm], severity: critcal}",
     "setting topics.weapons.severity: 'critcal' is not valid; did you mean 'critical'? valid: low, medium, high, "
     "critical"),
])
def test_a_typo_in_a_content_topic_is_an_error(tmp_path: Path, topic: str, message: str) -> None:
    # Before: `term:` banned nothing, `severty: high` left napalm at medium (a warn, not a block).
    with pytest.raises(PolicyError) as raised:
        build(tmp_path, f"detectors:\n  content:\n    topics:\n      weapons: {topic}\n")
    assert message in raised.value.message and raised.value.line == 2


@pytest.mark.parametrize(("severity", "message"), [
    ("{EMAIL_ADRESS: low}", "pii.severity: unknown key 'EMAIL_ADRESS'; did you mean 'EMAIL_ADDRESS'? valid: "),
    ("{CREDIT_CARD: critcal}", "setting severity.CREDIT_CARD: 'critcal' is not valid; did you mean 'critical'? "
                               "valid: low, medium, high, critical"),
    ("{PERSON: high}", "pii.severity: unknown key 'PERSON'; valid: "),  # an NER entity, with no NER model
])
def test_a_pii_severity_for_no_entity_or_of_no_severity_is_an_error(tmp_path: Path, severity: str,
                                                                     message: str) -> None:
    # Before: EMAIL_ADRESS was ignored (e-mail stayed medium); 'critcal' said "is not a valid Severity".
    with pytest.raises(PolicyError) as raised:
        build(tmp_path, f"detectors:\n  pii:\n    severity: {severity}\n")
    assert message in raised.value.message


def test_a_pii_severity_for_a_custom_recognizer_entity_is_accepted(tmp_path: Path) -> None:
    config = ("detectors:\n  pii:\n    severity: {EMPLOYEE_ID: high, EMAIL_ADDRESS: low}\n"
              "    recognizers:\n      - supported_entity: EMPLOYEE_ID\n        deny_list: [EMP-123456]\n")
    assert build(tmp_path, config).slots[0].detector.severity["EMPLOYEE_ID"].value == "high"
    with pytest.raises(PolicyError, match=re.escape("unknown key 'EMPLOYE_ID'; did you mean 'EMPLOYEE_ID'?")):
        build(tmp_path, config.replace("{EMPLOYEE_ID", "{EMPLOYE_ID"))


RULES_TYPOS = """\
rules:
  - id: skip_review
    category: oversight_evasion
    severity: high
    descripton: merges without review
    patern: "merge"
  - id: hide_logs
    severity: hgh
    pattern: "hide the logs"
"""


def test_rules_file_errors_name_the_file_line_rule_and_closest_key(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Before: `config.yml:6: ... extra.yml: bad unsafe_reasoning rule 'skip_review': 'pattern'` (a KeyError's
    # text), no line of extra.yml, no suggestion, and only the first problem.
    directory = bundle(tmp_path, "p", "detectors:\n  unsafe_reasoning:\n    rules_file: extra.yml\n",
                       extra__yml=RULES_TYPOS)
    (line,) = ok_validate(tmp_path, capsys)
    extra = directory / "extra.yml"
    assert f"{extra}:5: unsafe_reasoning rule 'skip_review': unknown key 'descripton'; did you mean 'description'?" \
        in line
    assert (f"{extra}:2: unsafe_reasoning rule 'skip_review' has no pattern (the regex it looks for): line 6 has "
            "'patern'; did you mean 'pattern'?") in line
    assert f"{extra}:8: bad unsafe_reasoning rule 'hide_logs': severity 'hgh' is not valid; did you mean 'high'?" \
        in line


def test_a_yaml_error_in_a_rules_file_names_the_file(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  unsafe_reasoning:\n    rules_file: extra.yml\n",
                       extra__yml="rules:\n  - id: x\n    pattern: [unclosed\n")
    with pytest.raises(PolicyError) as raised:
        build(tmp_path, (directory / "config.yml").read_text())
    assert f'in "{directory / "extra.yml"}", line 3' in raised.value.message
    assert "<unicode string>" not in raised.value.message


MANY_ERRORS = """\
colang_version: "2.x"
rails:
  output:
    flows: [check pii, check tool loop, check x]
detectors:
  pii:
    score_threshold: 7
  tool_loop:
    max_repeats: 0
  secret:
    min_entropy: -1
"""
MANY_ERRORS_FLOWS = """\
flow check x
  global $bot_message
  if "a" in $bot_message
    await BlockActoin(reason="x")
  await FooAction()
"""


def test_validate_reports_every_detector_error_in_one_run(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Before: only `pii`'s error; five errors took four runs to surface.
    directory = bundle(tmp_path, "p", MANY_ERRORS, rails__co=MANY_ERRORS_FLOWS)
    errors = ok_validate(tmp_path, capsys)
    config, flows = directory / "config.yml", directory / "rails.co"
    assert [line.split(": ")[0] for line in errors] == [
        f"error {config}:6", f"error {config}:8", f"error {config}:10", f"error {flows}:4", f"error {flows}:5"]
    assert "score_threshold" in errors[0] and "max_repeats" in errors[1] and "min_entropy" in errors[2]
    assert "'BlockActoin'" in errors[3] and "'FooAction'" in errors[4]


def test_a_flow_listed_under_rails_its_detector_cannot_see_is_reported_at_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: no line at all.
    directory = bundle(tmp_path, "p", "rails:\n  output:\n    flows: [check pii]\n  input:\n    flows:\n"
                                      "      - check tool schema\n")
    (line,) = ok_validate(tmp_path, capsys)
    assert line == (f"error {directory / 'config.yml'}:6: detector 'tool_schema' cannot look at any segment of the "
                    "rails ['input'] its flow is listed under")


def test_a_rejected_reload_is_counted_in_the_metrics(tmp_path: Path) -> None:
    # Before: only /readyz and the log said so.
    from guardrails.metrics import CheckMetrics, render
    from guardrails.policy import PolicyStore

    directory = bundle(tmp_path, "p", "detectors:\n  pii: {}\n")
    store = PolicyStore(tmp_path, check_interval_s=0)
    store.get("p")
    (tmp_path / "routing.yml").write_text("default: p\n")
    store.routing()
    assert 'guardrails_policy_reload_failures_total{policy="p"} 0\n' in render(CheckMetrics(), store)
    assert 'guardrails_policy_last_reload_ok{policy="p"} 1\n' in render(CheckMetrics(), store)
    (directory / "config.yml").write_text("detectors:\n  pii: {action: blok}\n")
    store.get("p")
    (tmp_path / "routing.yml").write_text("default: [p\n")
    store.routing()
    text = render(CheckMetrics(), store)
    for series, value in (('reload_failures_total{policy="p"}', 1), ('last_reload_ok{policy="p"}', 0),
                          ('reload_failures_total{policy="routing.yml"}', 1),
                          ('last_reload_ok{policy="routing.yml"}', 0)):
        assert f"guardrails_policy_{series} {value}\n" in text
    (directory / "config.yml").write_text("detectors:\n  pii: {action: block}\n")
    store.get("p")
    text = render(CheckMetrics(), store)
    assert 'guardrails_policy_reload_failures_total{policy="p"} 1\n' in text
    assert 'guardrails_policy_last_reload_ok{policy="p"} 1\n' in text


def test_an_action_importing_a_bundle_file_says_actions_are_self_contained(policy_root: Path) -> None:
    # Before: `ModuleNotFoundError: No module named 'limits'`, read as a missing package (and no line for a bundle
    # given by a relative path).
    strict = policy_root / "strict"
    (strict / "limits.py").write_text("LIMIT = 1000\n")
    (strict / "actions.py").write_text("import json\nimport limits\n" + BANK_ACTIONS)
    with pytest.raises(PolicyError) as raised:
        Engine(load_policy(strict), DetectorRegistry.from_entry_points())
    assert raised.value.line == 2 and raised.value.message.startswith(
        "does not import, so none of its actions would exist: ModuleNotFoundError: No module named 'limits' "
        "(limits.py is a file of the bundle, but an actions file cannot import the bundle's other files")


def test_an_unknown_action_finding_names_the_action_and_the_closest_one(
        policy_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Before: no suggestion; and an actions/ folder with only an __init__.py made NeMo log "No actions found in the
    # directory /tmp/guardrails-strict-…/actions." with "NoneType: None" on every build.
    import asyncio

    from guardrails.policy import PolicyStore
    from guardrails.service import CheckService

    strict = policy_root / "strict"
    (strict / "actions").mkdir()
    (strict / "actions" / "__init__.py").write_text("")
    flows = strict / "rails.co"
    flows.write_text(flows.read_text().replace("CompetitorMentionedAction(", "CompetitorMentionAction("))
    service = CheckService(PolicyStore(policy_root, check_interval_s=0), DetectorRegistry.from_entry_points(),
                           default_policy="strict")
    with caplog.at_level(logging.DEBUG):
        result = asyncio.run(service.check(chat("Honestly, Wells Fargo pays more on savings.")))
    assert not [r for r in caplog.records if "No actions found" in r.getMessage()]
    (error,) = [f for f in result["findings"] if f["category"] == "detector_error"]
    assert error["message"] == ("flow 'check competitor mention' called unknown action 'CompetitorMentionAction'; "
                                "did you mean 'CompetitorMentionedAction'?")


def test_secret_severity_values_and_rule_ids_name_the_closest() -> None:
    from detectors.secret import SecretDetector
    from guardrails.detector import SettingError

    with pytest.raises(SettingError, match=r"severity.aws_access_key_id: 'critcal' is not valid; did you mean "
                                           r"'critical'\? valid: low, medium, high, critical"):
        SecretDetector({"severity": {"aws_access_key_id": "critcal"}})
    with pytest.raises(ValueError, match=r"unknown rule ids \['aws_access_key'\]; did you mean 'aws_access_key_id'"):
        SecretDetector({"severity": {"aws_access_key": "low"}})
    assert SecretDetector({"severity": {"aws_access_key_id": None}}).severity == {}  # null: the rule's own


# --- validate reports the config's own errors with the detectors' -------------------------------------------------
FOUR_ERRORS = """\
rails:
  output:
    flows: [check pii]
on_detector_error: warnn
detectors:
  pii:
    action: blok
    score_treshold: 0.5
  tool_policy:
    agents:
      007: {deny_tools: [wire_money]}
"""


def test_validate_reports_config_errors_with_setting_errors_in_one_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: only `on_detector_error`'s error; each of the four took its own run.
    config = bundle(tmp_path, "p", FOUR_ERRORS) / "config.yml"
    errors = ok_validate(tmp_path, capsys)
    assert [line.split(": ")[0] for line in errors] == [
        f"error {config}:4", f"error {config}:7", f"error {config}:11", f"error {config}:6"]
    assert "on_detector_error: 'warnn'" in errors[0] and "action: 'blok'" in errors[1]
    assert "agent key 007" in errors[2] and "'score_treshold'" in errors[3]


def test_validate_reports_each_detectors_applies_to_and_timeout_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = bundle(tmp_path, "p", "detectors:\n  pii:\n    applies_to: {phase: [response]}\n"
                                   "  secret:\n    timeout_ms: -5\n    min_entropy: -1\n") / "config.yml"
    errors = ok_validate(tmp_path, capsys)
    assert [line.split(": ")[0] for line in errors] == [f"error {config}:3", f"error {config}:5", f"error {config}:4"]
    assert "applies_to key 'phase'" in errors[0] and "timeout_ms" in errors[1] and "min_entropy" in errors[2]


def test_a_load_by_the_service_still_stops_at_the_first_config_error(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", FOUR_ERRORS)
    with pytest.raises(PolicyError) as raised:
        load_policy(directory)
    assert raised.value.line == 11  # the non-string key, found while the YAML is read


def test_a_yaml_syntax_error_is_still_reported_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle(tmp_path, "p", FOUR_ERRORS + "  pii: [unclosed\n")
    (line,) = ok_validate(tmp_path, capsys)
    assert "YAML error" in line
