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

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate, compress, pairwise
from typing import Any, TypeVar

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
QUOTES = ('"', "'", '\\"')  # a JSON result inside another JSON string keeps its quotes escaped
T = TypeVar("T")


def per_exchange(read: Callable[[Exchange], T]) -> Callable[[Exchange], T]:
    """`read` (what a rule takes from the whole history) run once per exchange: the detector asks for each call of
    the response, and a response of 1,000 calls would read a 4 MB history 1,000 times. The last exchange asked
    about is kept (a later one may reuse its id), so nothing is answered for another exchange."""
    last: list[tuple[Exchange, T]] = []

    @functools.wraps(read)
    def once(exchange: Exchange) -> T:
        if last and last[0][0] is exchange:
            return last[0][1]
        value = read(exchange)
        last[:] = [(exchange, value)]
        return value

    return once


def context_violations(tool: str, arguments: Mapping[str, Any], exchange: Exchange
                       ) -> Iterator[tuple[ArgPath, Violation]]:
    values = _string_leaves(arguments)
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


def _string_leaves(arguments: Mapping[str, Any]) -> list[tuple[ArgPath, str]]:
    return [(path, value) for path, value in leaves(arguments) if isinstance(value, str)]


def _switches_off(tool: str, values: list[tuple[ArgPath, str]]) -> bool:
    words = [w for w in re.split(r"[^a-z]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", tool).lower()) if w]
    if not OFF_TOOL_WORDS.isdisjoint(words) or any(pair in OFF_TOOL_PAIRS for pair in pairwise(words)):
        return True
    return any(OFF_ACTION.fullmatch(value.strip()) for _, value in values)


def _safety_devices_off(values: list[tuple[ArgPath, str]], exchange: Exchange
                        ) -> Iterator[tuple[ArgPath, Violation]]:
    asked = _asked(exchange)
    records = _device_records(exchange)
    for path, value in values:
        value = _device_id(value)
        if value is None:
            continue
        words = {m.group().lower() for m in SAFETY_DEVICE.finditer(value)} or records.words(value)
        if words and not any(word in asked for word in words):
            yield path, Violation("context.safety_device_off",
                                  f"switches off {value!r}, a {'/'.join(sorted(words))} device the user did not name",
                                  Severity.MEDIUM)


def _device_id(value: str) -> str | None:
    """The argument as a device id or name (not the action, nor a long text)."""
    value = value.strip()
    return None if not value or len(value) > MAX_ID_LENGTH or OFF_ACTION.fullmatch(value) else value


@per_exchange
def _asked(exchange: Exchange) -> str:
    return " ".join(s.text for s in exchange.trusted).lower()  # the user's (or the operator's) own words


def _standing_access(arguments: Mapping[str, Any], exchange: Exchange) -> Iterator[tuple[ArgPath, Violation]]:
    """A top-level flag or duration that makes the grant permanent, when no trusted text asks for lasting access."""
    for key, value in arguments.items():
        key = str(key)
        standing = (value is True and STANDING_FLAG.fullmatch(key)) or (
            isinstance(value, str) and STANDING_VALUE.fullmatch(value.strip())
            and name_tokens(key) & DURATION_KEY_WORDS)
        if standing and not _asks_standing(exchange):
            yield (key,), Violation("context.standing_access", f"grants access with {key}={value!r} though the user "
                                    "asked for no permanent access", Severity.MEDIUM)
            return


@per_exchange
def _asks_standing(exchange: Exchange) -> bool:
    return any(STANDING_ASKED.search(s.text) for s in exchange.trusted)


class DeviceRecords:
    """The safety-device words of the record (the `{...}` around it) in which an id is a quoted field value in the
    tool results, for every id the exchange's calls switch off: each text is split at each quote once for all of
    them (a search per id would read the results once per call). An id no call of the exchange holds (a caller of
    `context_violations` with other arguments) is searched for on its own. An id is not looked for between quotes
    it holds itself: JSON escapes them, Python's repr picks the other quote."""

    def __init__(self, exchange: Exchange) -> None:
        self.texts = [s.text for s in exchange.untrusted]
        wanted = {value for segment in exchange.tool_calls if (call := segment.tool_call) is not None
                  and isinstance(call.arguments, Mapping) and (values := _string_leaves(call.arguments))
                  and _switches_off(call.name, values) for _, raw in values
                  if (value := _device_id(raw)) is not None and not SAFETY_DEVICE.search(value)}
        self.found: dict[str, set[str]] = {value: set() for value in wanted}
        for text in self.texts if wanted else ():
            for quote in QUOTES:
                left = {value for value in wanted if not self.found[value] and quote not in value}
                for value, at in _quoted(text, quote, left):
                    self.found[value] = self.found[value] or _words_around(text, at, len(value) + 2 * len(quote))

    def words(self, value: str) -> set[str]:
        found = self.found.get(value)
        if found is None:
            found = self.found[value] = _record_words(value, self.texts)
        return found


_device_records = per_exchange(DeviceRecords)


def _quoted(text: str, quote: str, wanted: set[str]) -> Iterator[tuple[str, int]]:
    """(value, offset of its opening quote) of the first MAX_RECORDS times each wanted value (holding no `quote`)
    stands between two quotes, in text order: a split at the quotes and set look-ups, all in C."""
    pieces = text.split(quote)
    inner = pieces[1:-1]  # what stands between two neighbouring quotes
    if not wanted.intersection(inner):
        return
    ends = list(accumulate(map(len, pieces)))
    seen: dict[str, int] = {}
    for i in compress(range(len(inner)), map(wanted.__contains__, inner)):
        value = inner[i]
        seen[value] = seen.get(value, 0) + 1
        if seen[value] <= MAX_RECORDS:
            yield value, ends[i] + i * len(quote)  # the pieces before it, and the quotes between them


def _record_words(value: str, texts: list[str]) -> set[str]:
    """The safety-device words of the record in which `value` is a quoted field value, found by search."""
    for text in texts:
        for quote in QUOTES:
            if quote in value:
                continue
            needle = f"{quote}{value}{quote}"
            at, tried = text.find(needle), 0
            while at >= 0 and tried < MAX_RECORDS:
                tried += 1
                found = _words_around(text, at, len(needle))
                if found:
                    return found
                at = text.find(needle, at + 1)
    return set()


def _words_around(text: str, at: int, length: int) -> set[str]:
    """The safety-device words of the `{...}` record around text[at:at + length], the quoted value left out."""
    start = text.rfind("{", max(0, at - RECORD_REACH), at)
    end = text.find("}", at, at + length + RECORD_REACH)
    if start < 0 or end < 0:
        return set()
    record = text[start:at] + text[at + length:end]
    return {m.group().lower() for m in SAFETY_DEVICE.finditer(record)}


def _system_processes_killed(command: str, exchange: Exchange) -> Iterator[Violation]:
    pids = [pid for match in KILL.finditer(command) for pid in match.group(2).split()]
    if not pids:
        return
    owners = _system_pids(exchange)
    for pid in dict.fromkeys(pids):
        owner = owners.get(pid)
        if owner is not None:
            name = RUNS_SYSTEM_PROCESS.search(owner)
            process = name.group().strip(" /[(") if name else "?"
            yield Violation("context.system_process_kill", f"kills PID {pid}, which the earlier process listing "
                            f"shows as {process!r}", Severity.HIGH)


@per_exchange
def _system_pids(exchange: Exchange) -> dict[str, str]:
    """Each number that stands as a word (between spaces) in a line of the process listings that runs a system
    process, and the first such line: one pass over the listings, whatever the number of PIDs killed."""
    owners: dict[str, str] = {}
    for s in exchange.untrusted:
        for line in LINE_BREAK.split(s.text):
            if RUNS_SYSTEM_PROCESS.search(line):
                for word in line.split():
                    if word.isdecimal():
                        owners.setdefault(word, line)
    return owners
