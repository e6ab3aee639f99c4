"""PowerShell and cmd.exe command lines, which bashlex reads as nonsense: the few operations the POSIX rules
catch, in Windows spelling. Tools named `powershell` or `cmd` are shell tools (classify.py), so their commands
come here too: `Remove-Item -Recurse -Force C:\\`, `iex (iwr http://x/a.ps1)`, `powershell -enc <base64>`.

Matched on the text (case-insensitive), not parsed; each rule needs the verb and its dangerous argument together.
"""

from __future__ import annotations

import base64
import binascii
import re

from detectors.tool_policy.base import Violation
from guardrails.findings import Severity

# Cheap gate: a text without any of these words holds no Windows operation the rules look at.
GATE = re.compile(r"(?i)remove-item|\b(?:ri|rd|rmdir|del|erase|iex|format)\b|invoke-|-e(?:nc|ncodedcommand|c)\b|"
                  r"tcpclient|stop-computer|restart-computer|clear-disk|format-volume|downloadstring|\$env:")
RUNS_TEXT = re.compile(r"(?i)\b(?:iex|invoke-expression)\b")
FETCHES = re.compile(r"(?i)\b(?:iwr|irm|invoke-webrequest|invoke-restmethod|curl|wget|start-bitstransfer)\b"
                     r"|downloadstring|downloadfile|net\.webclient")
# (`rm -Recurse`, PowerShell's alias, is read by the POSIX rules: its flags hold an r.)
DELETE = re.compile(r"(?i)\b(?:remove-item|ri|rmdir|rd|del|erase)\b")
RECURSIVE = re.compile(r"(?i)\s-r(?:ecurse)?\b|\s/s\b")
STATEMENTS = re.compile(r"[;|\n]")  # a verb's arguments end at the statement's end
# A drive root, the Windows or Users folder, the profile: `C:\`, `C:\*`, `$env:SystemRoot`, `C:\Windows`.
ROOT_TARGET = re.compile(r"""(?i)(?:^|[\s'"])(?:[a-z]:|\$env:(?:systemroot|windir|systemdrive|userprofile|"""
                         r"""programfiles)|[a-z]:\\+(?:windows|users|program files)|~)\\*\*?(?=$|[\s'";|])""")
WIPE = re.compile(r"(?i)\bformat(?:\.com)?\s+[a-z]:|\b(?:format-volume|clear-disk|initialize-disk)\b")
POWER = re.compile(r"(?i)\b(?:stop-computer|restart-computer)\b|\bshutdown(?:\.exe)?\s+/[srp]\b")
SOCKET = re.compile(r"(?i)net\.sockets\.tcpclient")
LAUNCHER = re.compile(r"(?i)\b(?:powershell|pwsh)(?:\.exe)?\b")
ENCODED = re.compile(r"(?i)\s-e(?:nc(?:odedcommand)?|c)?\s+([a-z0-9+/=]{8,})")
MAX_DEPTH = 2


def windows_violations(text: str, depth: int = 0) -> list[Violation]:
    if not GATE.search(text):
        return []
    out: list[Violation] = []
    if RUNS_TEXT.search(text) and FETCHES.search(text):
        out.append(Violation("shell.pipe_to_shell", "Invoke-Expression runs downloaded code", Severity.CRITICAL))
    for statement in STATEMENTS.split(text):
        for target in _recursive_delete_targets(statement):
            out.append(Violation("shell.destructive", f"recursive delete of {target.strip()[:80]!r}",
                                 Severity.CRITICAL if ROOT_TARGET.search(target) else Severity.MEDIUM))
    if WIPE.search(text):
        out.append(Violation("shell.destructive", "disk-wiping command", Severity.CRITICAL))
    if POWER.search(text):
        out.append(Violation("shell.destructive", "command stops the machine", Severity.HIGH))
    if SOCKET.search(text) and RUNS_TEXT.search(text):
        out.append(Violation("shell.reverse_shell", "TCP client wired to Invoke-Expression", Severity.CRITICAL))
    for payload in _encoded_commands(text) if depth < MAX_DEPTH else ():
        decoded = _decode_utf16(payload)
        if decoded:
            out.extend(windows_violations(decoded, depth + 1))
    return out


# Both read statement by statement, from the first verb or launcher on: a regex that looked ahead from each of
# them re-read the rest of the statement each time (a 20 KB line of `rd rd rd ...` took half a second).
def _recursive_delete_targets(statement: str) -> list[str]:
    """What follows a delete verb that has a recursive flag (`Remove-Item -Recurse X`, `rd /s X`)."""
    verb = DELETE.search(statement)
    if verb is None or not RECURSIVE.search(statement, verb.end()):
        return []
    return [statement[verb.end():]]


def _encoded_commands(text: str) -> list[str]:
    """The base64 payloads of `powershell -EncodedCommand` (or -enc, -ec, -e) in each statement that runs one."""
    payloads = []
    for statement in STATEMENTS.split(text):
        launcher = LAUNCHER.search(statement)
        if launcher is not None:
            payloads += [m.group(1) for m in ENCODED.finditer(statement, launcher.end())]
    return payloads


def _decode_utf16(value: str) -> str | None:
    """`-EncodedCommand` takes base64 of UTF-16LE text."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-16-le")
    except (binascii.Error, ValueError):
        return None
