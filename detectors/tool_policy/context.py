"""Rules that read a call together with the tool results before it: what an id or a PID stands for is written
there, not in the call.

* `context.safety_device_off`: a call that switches a device off (`{"device_id": "d3", "action": "turn off"}`)
  where an earlier result (or the id itself) describes that device as a security camera, an alarm, a smoke
  detector..., and the user's and system prompt's words name no such device ("turn off all devices before my
  call" is not "turn off the camera").
* `context.system_process_kill`: `kill` of PIDs that an earlier process listing shows to be init, systemd,
  sshd or another process the system runs on.
* `context.standing_access`: a grant (a tool named for access, guests, sharing, invitations, permissions) made
  permanent (`"permanent": true`, `"access_type": "unlimited"`) while the user's and system prompt's words ask for
  nothing lasting ("recurring access for my dog walker, every day 2-3 pm" is not a key for ever).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from itertools import pairwise
from typing import Any

from detectors._argspans import ArgPath, leaves
from detectors.tool_policy.base import Violation
from detectors.tool_policy.classify import classify, name_tokens
from detectors.tool_policy.shell import SYSTEM_PROCESS
from guardrails.exchange import Exchange
from guardrails.findings import Severity

OFF_ACTION = re.compile(r"(?:turn(?:ed)?|switch(?:ed)?|power(?:ed)?|shut)[ _-]?(?:off|down)|off|disabled?|"
                        r"deactivated?|disarm(?:ed)?|unplug(?:ged)?", re.IGNORECASE)
OFF_TOOL_WORDS = frozenset({"disable", "deactivate", "disarm", "unplug"})
OFF_TOOL_PAIRS = frozenset({("turn", "off"), ("switch", "off"), ("power", "off"), ("shut", "down")})
# Devices that keep a home or a building safe (not a letter inside a longer word: `front_door_camera` counts).
SAFETY_DEVICE = re.compile(r"(?<![a-z])(?:security|surveillance|cctv|camera|alarm|smoke|carbon[ _-]?monoxide|"
                           r"sprinkler|intrusion|siren)(?![a-z])", re.IGNORECASE)
MAX_ID_LENGTH = 80
RECORD_REACH = 400  # how far around an id its record (the enclosing `{...}`) is looked for
MAX_RECORDS = 50  # occurrences of one id looked at per text (a short id may recur thousands of times)
KILL = re.compile(r"\bkill\b((?:\s+-{1,2}[\w-]+)*)((?:\s+\d+)+)")
LINE_BREAK = re.compile(r"\r?\n|\\n")  # a listing inside a JSON string keeps its line breaks escaped
RUNS_SYSTEM_PROCESS = re.compile(rf"(?:^|[\s/\[(]){SYSTEM_PROCESS.pattern}(?=$|[\s\]):,'\"])")
ACCESS_TOOL_WORDS = frozenset({"grant", "access", "share", "invite", "permission", "permissions", "guest", "guests",
                               "authorize", "role", "roles"})
# A flag that makes a grant outlive any schedule (`permanent: true`, `never_expires: true`), or a duration argument
# whose value says so (`"access_type": "permanent"`).
STANDING_FLAG = re.compile(r"(?:is_?)?(?:permanent|indefinite|unlimited|never_?expires?|no_?expiry|no_?expiration)"
                           r"(?:_?access)?", re.IGNORECASE)
STANDING_VALUE = re.compile(r"permanent|indefinite(?:ly)?|unlimited|forever|never", re.IGNORECASE)
DURATION_KEY_WORDS = frozenset({"access", "duration", "expiry", "expiration", "expires", "type", "validity", "period",
                                "term", "mode"})
STANDING_ASKED = re.compile(r"\b(?:permanent(?:ly)?|indefinite(?:ly)?|forever|unlimited|never\s+expir\w*|no\s+expir\w*"
                            r"|always|ongoing|any\s?time|at\s+all\s+times)\b", re.IGNORECASE)


def context_violations(tool: str, arguments: Mapping[str, Any], exchange: Exchange
                       ) -> Iterator[tuple[ArgPath, Violation]]:
    values = [(path, value) for path, value in leaves(arguments) if isinstance(value, str)]
    if values and _switches_off(tool, values):
        yield from _safety_devices_off(values, exchange)
    if name_tokens(tool) & ACCESS_TOOL_WORDS:
        yield from _standing_access(arguments, exchange)
    if not exchange.untrusted:
        return
    for path, value in values:
        if "kill" in value and classify(tool, next((t for t in reversed(path) if isinstance(t, str)), None),
                                        value, None) == "shell":
            yield from ((path, violation) for violation in _system_processes_killed(value, exchange))


def _switches_off(tool: str, values: list[tuple[ArgPath, str]]) -> bool:
    words = [w for w in re.split(r"[^a-z]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", tool).lower()) if w]
    if not OFF_TOOL_WORDS.isdisjoint(words) or any(pair in OFF_TOOL_PAIRS for pair in pairwise(words)):
        return True
    return any(OFF_ACTION.fullmatch(value.strip()) for _, value in values)


def _safety_devices_off(values: list[tuple[ArgPath, str]], exchange: Exchange
                        ) -> Iterator[tuple[ArgPath, Violation]]:
    asked = " ".join(s.text for s in exchange.trusted).lower()  # the user's (or the operator's) own words
    untrusted = [s.text for s in exchange.untrusted]
    for path, value in values:
        value = value.strip()
        if not value or len(value) > MAX_ID_LENGTH or OFF_ACTION.fullmatch(value):
            continue
        words = {m.group().lower() for m in SAFETY_DEVICE.finditer(value)}
        if not words:
            words = next((found for text in untrusted if (found := _record_words(value, text))), set())
        if words and not any(word in asked for word in words):
            yield path, Violation("context.safety_device_off",
                                  f"switches off {value!r}, a {'/'.join(sorted(words))} device the user did not name",
                                  Severity.MEDIUM)


def _standing_access(arguments: Mapping[str, Any], exchange: Exchange) -> Iterator[tuple[ArgPath, Violation]]:
    """A top-level flag or duration that makes the grant permanent, when no trusted text asks for lasting access."""
    for key, value in arguments.items():
        key = str(key)
        standing = (value is True and STANDING_FLAG.fullmatch(key)) or (
            isinstance(value, str) and STANDING_VALUE.fullmatch(value.strip())
            and name_tokens(key) & DURATION_KEY_WORDS)
        if standing and not any(STANDING_ASKED.search(s.text) for s in exchange.trusted):
            yield (key,), Violation("context.standing_access", f"grants access with {key}={value!r} though the user "
                                    "asked for no permanent access", Severity.MEDIUM)
            return


def _record_words(value: str, text: str) -> set[str]:
    """The safety-device words of the record (the `{...}` around it) in which `value` is a quoted field value."""
    for quote in ('"', "'", '\\"'):  # a JSON result inside another JSON string keeps its quotes escaped
        needle = f"{quote}{value}{quote}"
        at, tried = text.find(needle), 0
        while at >= 0 and tried < MAX_RECORDS:
            tried += 1
            start = text.rfind("{", max(0, at - RECORD_REACH), at)
            end = text.find("}", at, at + len(needle) + RECORD_REACH)
            if start >= 0 and end >= 0:
                record = text[start:at] + text[at + len(needle):end]
                found = {m.group().lower() for m in SAFETY_DEVICE.finditer(record)}
                if found:
                    return found
            at = text.find(needle, at + 1)
    return set()


def _system_processes_killed(command: str, exchange: Exchange) -> Iterator[Violation]:
    pids = [pid for match in KILL.finditer(command) for pid in match.group(2).split()]
    if not pids:
        return
    lines = [line for s in exchange.untrusted for line in LINE_BREAK.split(s.text) if RUNS_SYSTEM_PROCESS.search(line)]
    for pid in dict.fromkeys(pids):
        owner = next((line for line in lines if re.search(rf"(?<!\S){pid}(?!\S)", line)), None)
        if owner is not None:
            name = RUNS_SYSTEM_PROCESS.search(owner)
            process = name.group().strip(" /[(") if name else "?"
            yield Violation("context.system_process_kill", f"kills PID {pid}, which the earlier process listing "
                            f"shows as {process!r}", Severity.HIGH)

