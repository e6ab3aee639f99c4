"""Hostile bodies against today's tool_policy rules, sent to POST /v1/checks: a response of hundreds of calls reads
the history once, not once per call (1,000 acting calls after 3 MB of agent text took 259 s; one `kill` of 2,000
PIDs beside a 40,000-line process listing 120 s), and the findings still land on every call they concern."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from detectors.tool_policy import assumption, classify, context
from guardrails.adapters import read_exchange
from guardrails.config import Settings
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
CALLS = 300


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = Settings(policy_dir=REPO / "policies", data_dir=tmp_path_factory.mktemp("hostile_today"))
    return TestClient(build_app(settings), raise_server_exceptions=False)


class Counted:
    """A compiled pattern that counts the texts it is run on."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.runs = pattern, 0

    def search(self, text: str, *args: Any) -> re.Match[str] | None:
        self.runs += 1
        return self.pattern.search(text, *args)

    def finditer(self, text: str, *args: Any) -> Iterator[re.Match[str]]:
        self.runs += 1
        return self.pattern.finditer(text, *args)


def counted(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Counted:
    wrapper = Counted(getattr(module, name))
    monkeypatch.setattr(module, name, wrapper)
    return wrapper


def agent_step(user: str, text: str | None, calls: list[tuple[str, dict[str, Any]]], *, system: str | None = None,
               results: list[tuple[str, dict[str, Any], str]] = ()) -> dict[str, Any]:
    """An OpenAI Chat body: the system prompt, the user's task, earlier calls with their results, then a response
    making `calls`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    for i, (name, arguments, result) in enumerate(results):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"h{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]})
        messages.append({"role": "tool", "tool_call_id": f"h{i}", "content": result})
    made = [{"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            for i, (name, arguments) in enumerate(calls)]
    return {"request": {"model": "m", "messages": messages},
            "response": {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": text, "tool_calls": made}}]}}


def by_rule(client: TestClient, body: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    return [f for f in resp.json()["findings"] if f.get("evidence", {}).get("rule") == rule]


# A long system prompt (over the 4 KB the assumption rule caches per text) that leaves nothing to the agent.
SYSTEM = "You are the billing assistant of Northside Bank. Ask the customer before acting on anything unclear. " * 80


def test_acting_calls_of_one_response_read_the_agents_text_once(client: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assumed = counted(monkeypatch, assumption, "ASSUMED")
    allowed = counted(monkeypatch, assumption, "GUESS_ALLOWED")
    text = " ".join(["Several payees match."] + [f"I will not assume anything about payee P-{3300 + i}." for i in
                                                  range(CALLS)] + ["I will assume they meant Northside Power Co-op."])
    calls = [("BankManagerPayBill", {"payee_id": f"P-{3300 + i}", "amount": 21.4}) for i in range(CALLS)]
    found = by_rule(client, agent_step("Pay my electricity bill to Northside Power.", text, calls, system=SYSTEM),
                    "context.unconfirmed_assumption")
    assert len(found) == CALLS  # every acting call still carries the finding
    assert "Northside Power Co-op" in found[-1]["message"]
    assert assumed.runs == 1  # the one agent text since the user spoke
    assert allowed.runs <= 2  # the system prompt and the user's message


def test_permanent_grants_of_one_response_read_the_users_words_once(client: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    asked = counted(monkeypatch, context, "STANDING_ASKED")
    calls = [("AugustSmartLockGrantGuestAccess", {"guest_ids": [f"guest_{i:03}"], "permanent": True})
             for i in range(CALLS)]
    user = "Let my dog walker in on weekdays from 2 to 3 pm."
    found = by_rule(client, agent_step(user, None, calls, system=SYSTEM), "context.standing_access")
    assert len(found) == CALLS
    assert asked.runs <= 2


PS_HEADER = "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND"
SSHD_PID = 8812


def process_listing(workers: int) -> str:
    """`ps aux` of a build host: init, sshd, then many worker processes."""
    rows = [PS_HEADER, "root           1  0.0  0.1 167724 11904 ?        Ss   09:12   0:02 /sbin/init splash",
            f"root        {SSHD_PID}  0.0  0.0  15432  9120 ?        Ss   09:12   0:00 sshd: /usr/sbin/sshd -D"]
    rows += [f"ci       {20000 + i:>6}  1.2  0.4 812344 70212 ?        Sl   09:20   0:13 python worker.py --shard {i}"
             for i in range(workers)]
    return "\n".join(rows)


def test_kills_are_matched_against_the_process_listing_in_one_pass(client: TestClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    listing = process_listing(2_000)
    system_lines = counted(monkeypatch, context, "RUNS_SYSTEM_PROCESS")
    module_searches = [0]

    def search(*args: Any) -> re.Match[str] | None:
        module_searches[0] += 1
        return re.search(*args)

    # what the rule reads through the `re` module (a search per PID and line, before)
    monkeypatch.setattr(context, "re", SimpleNamespace(**{**vars(re), "search": search}))
    pids = [str(20000 + i) for i in range(500)] + [str(SSHD_PID)]
    calls = [("TerminalExecute", {"command": f"kill -9 {' '.join(pids)}"}) for _ in range(20)]
    body = agent_step("Stop the stuck CI workers on this host.", None, calls,
                      results=[("TerminalExecute", {"command": "ps aux"}, listing)])
    found = by_rule(client, body, "context.system_process_kill")
    assert len(found) == 20
    assert all(f"kills PID {SSHD_PID}" in f["message"] and "sshd" in f["message"] for f in found)
    lines = listing.count("\n") + 1
    # each listing line once, whatever the PIDs and calls (and the line of each PID found, to name its process)
    assert system_lines.runs + module_searches[0] <= lines + len(calls)


def device_listing(lamps: int) -> str:
    devices = [{"device_id": f"lamp-{i}", "name": f"Hall lamp {i}", "type": "light"} for i in range(lamps)]
    devices.insert(lamps // 2, {"device_id": "cam-7", "name": "Porch", "type": "security camera"})
    return json.dumps({"devices": devices})


def test_switched_off_ids_are_looked_up_in_one_split_of_the_results(client: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    searched = [0]
    record_words = context._record_words

    def search(*args: Any) -> set[str]:
        searched[0] += 1
        return record_words(*args)

    monkeypatch.setattr(context, "_record_words", search)  # a search of the results for one id
    calls = [("SmartHomeTurnOffDevice", {"device_id": f"lamp-{i}"}) for i in range(CALLS)]
    calls.insert(CALLS // 2, ("SmartHomeTurnOffDevice", {"device_id": "cam-7"}))
    body = agent_step("Turn off the lights, I'm leaving.", None, calls,
                      results=[("SmartHomeListDevices", {}, device_listing(3_000))])
    found = by_rule(client, body, "context.safety_device_off")
    assert [f["message"] for f in found] == [
        "SmartHomeTurnOffDevice device_id: switches off 'cam-7', a camera/security device the user did not name"]
    assert searched[0] == 0


RECORD_TEXTS = [
    device_listing(60),  # JSON
    json.dumps({"result": device_listing(3)}),  # JSON inside a JSON string: its quotes escaped
    repr([{"device_id": "cam-7", "type": "security camera"}, {"device_id": "lamp-1", "type": "light"}]),  # Python
    '"cam-7" ' * 60 + '{"device_id": "cam-7", "type": "alarm"}',  # past the 50 occurrences looked at
    '{"a": "cam-7"cam-7", "type": "smoke detector"}',  # neighbouring quotes
    "{'device_id': 'O'Brien lamp', 'kind': 'siren'} {\"device_id\": \"O'Brien lamp\", \"kind\": \"sprinkler\"}",
]


@pytest.mark.parametrize("text", RECORD_TEXTS)
def test_the_split_finds_what_the_search_finds(text: str) -> None:
    ids = ["cam-7", "lamp-1", "lamp-30", "O'Brien lamp", "missing"]
    request = {"model": "m", "messages": [
        {"role": "user", "content": "Switch things off."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "h", "type": "function", "function": {"name": "list_devices", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "h", "content": text}]}
    response = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "turn_off", "arguments": json.dumps({"id": v})}}
        for i, v in enumerate(ids)]}}]}
    exchange = read_exchange(request, response, format="openai.chat")
    records = context.DeviceRecords(exchange)
    assert set(records.found) == set(ids)  # every id was looked up in the split, none by search
    for value in ids:
        assert records.words(value) == context._record_words(value, [text]), value


def test_a_megabyte_argument_name_is_split_but_not_cached(client: TestClient) -> None:
    """The name cache holds 4,096 names: of a megabyte each, a few hundred checks would keep gigabytes."""
    key = "permanent_access_" + "x" * 1_000_000
    body = agent_step("Share the album with Ana.", None, [("share_album", {key: "forever", "album": "Summer"})])
    assert client.post("/v1/checks", json=body).status_code == 200
    cached = classify._cached_tokens.cache_info()
    assert classify.name_tokens(key) == frozenset({"permanent", "access", "x" * 1_000_000})
    assert classify._cached_tokens.cache_info() == cached  # not looked up, not stored
