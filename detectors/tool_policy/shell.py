"""Shell commands, parsed (bashlex; shlex when bashlex cannot read the text), never grepped.

A command line is reduced to pipelines of simple commands (their words and redirect targets), including
commands nested in `$(...)`, backticks and `sh -c '...'`; the rules judge those commands.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import bashlex

from detectors.tool_policy.base import Violation, string_list
from detectors.tool_policy.paths import is_sensitive
from guardrails.findings import Severity

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "csh", "tcsh", "ash", "busybox"})
INTERPRETERS = frozenset({"python", "python2", "python3", "perl", "ruby", "node", "php", "lua"})
FETCHERS = frozenset({"curl", "wget", "fetch", "nc", "ncat", "netcat", "socat", "telnet", "base64", "xxd"})
ESCALATION = frozenset({"sudo", "su", "doas", "pkexec", "runas", "setcap", "visudo", "chroot"})
WRAPPERS = frozenset({"env", "nohup", "time", "nice", "ionice", "stdbuf", "timeout", "xargs", "exec", "command",
                      "builtin", "then", "do", "else"})
WIPERS = frozenset({"mkfs", "shred", "wipefs", "fdisk", "sfdisk", "parted", "mkswap", "blkdiscard"})
POWER = frozenset({"shutdown", "reboot", "halt", "poweroff"})
ROOT_TARGETS = frozenset({"/", "/*", "~", "~/", "~/*", "*", ".", "./", "..", "$HOME", "${HOME}", "/home", "/etc",
                          "/usr", "/var", "/boot", "/bin", "/lib", "/opt", "/root", "/srv", "C:\\"})
FORK_BOMB = re.compile(r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}")
REVERSE_SOCKET = re.compile(r"/dev/(?:tcp|udp)/")
PY_REVERSE = re.compile(r"socket\b.*(?:subprocess|pty\.spawn|os\.dup2)", re.S)
MAX_DEPTH = 3
MAX_LENGTH = 20_000
# Programs some rule looks at. A command line naming none of them (and no path, socket or substitution)
# cannot violate a built-in rule, so it is not parsed: bashlex costs ~0.5 ms per line.
TRIGGERS = (SHELLS | INTERPRETERS | FETCHERS | ESCALATION | WIPERS | POWER
            | {"rm", "dd", "chmod", "chown", "find", "kill", "init", "eval", "source"})
WORD = re.compile(r"[^\s|&;()<>`'\"]+")


@dataclass(slots=True)
class Command:
    words: list[str]
    redirects: list[str] = field(default_factory=list)

    @property
    def program(self) -> str:
        return posixpath.basename(self.words[0]) if self.words else ""


Pipeline = list[Command]


def parse(text: str) -> list[Pipeline]:
    """Pipelines of simple commands; `sh -c` strings and substitutions are flattened in as their own."""
    pipelines: list[Pipeline] = []
    try:
        for node in bashlex.parse(text):
            _walk(node, pipelines)
    except Exception:  # bashlex raises several error types, and asserts on odd input
        pipelines = _shlex_pipelines(text)
    return pipelines


def _walk(node: Any, out: list[Pipeline]) -> None:
    kind = getattr(node, "kind", "")
    if kind == "pipeline":
        pipeline = [_command(part, out) for part in node.parts if part.kind == "command"]
        out.append(pipeline)
        for part in node.parts:
            if part.kind not in ("command", "pipe"):
                _walk(part, out)
        return
    if kind == "command":
        out.append([_command(node, out)])
        return
    for attr in ("parts", "list"):
        for child in getattr(node, attr, None) or ():
            _walk(child, out)
    if kind in ("commandsubstitution", "processsubstitution"):
        _walk(node.command, out)


def _command(node: Any, out: list[Pipeline]) -> Command:
    command = Command(words=[])
    for part in node.parts:
        if part.kind == "word":
            command.words.append(part.word)
            for sub in getattr(part, "parts", None) or ():
                _walk(sub, out)
        elif part.kind == "redirect" and getattr(part.output, "kind", "") == "word":
            command.redirects.append(part.output.word)
        elif part.kind == "compound":
            _walk(part, out)
    return command


def _shlex_pipelines(text: str) -> list[Pipeline]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        tokens = text.split()
    pipelines: list[Pipeline] = [[Command(words=[])]]
    redirect_next = False
    for token in tokens:
        if token in (";", "&&", "||", "&", ";;", "\n"):
            pipelines.append([Command(words=[])])
        elif token in ("|", "|&"):
            pipelines[-1].append(Command(words=[]))
        elif token in (">", ">>", "<", ">&", "&>", "<<", "<<<", ">|"):
            redirect_next = True
        elif redirect_next:
            pipelines[-1][-1].redirects.append(token)
            redirect_next = False
        else:
            pipelines[-1][-1].words.append(token)
    return [[c for c in p if c.words or c.redirects] for p in pipelines if any(c.words for c in p)]


class ShellRule:
    """`{type: shell, allow_commands: [...], deny_commands: [...]}`; the built-in rules always apply."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.allow = frozenset(string_list(settings, "allow_commands"))
        self.deny = frozenset(string_list(settings, "deny_commands"))
        self.check = lru_cache(maxsize=2048)(self._check)  # type: ignore[method-assign]

    def check(self, value: Any) -> list[Violation]:
        return self._check(value)

    def _check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value.strip():
            return []
        if not self.allow and not self._may_violate(value):
            return []
        out: list[Violation] = []
        self._check_text(value[:MAX_LENGTH], 0, out)
        unique: dict[str, Violation] = {}
        for violation in out:
            unique.setdefault(violation.rule + violation.message, violation)
        return list(unique.values())

    def _may_violate(self, text: str) -> bool:
        if FORK_BOMB.search(text) or REVERSE_SOCKET.search(text):
            return True
        words = WORD.findall(text)
        if any(("/" in w or w.startswith(".")) and is_sensitive(posixpath.normpath(_strip_at(w))) for w in words):
            return True
        programs = {posixpath.basename(w) for w in words}
        return not programs.isdisjoint(TRIGGERS) or not programs.isdisjoint(self.deny)

    def _check_text(self, text: str, depth: int, out: list[Violation]) -> None:
        if FORK_BOMB.search(text):
            out.append(Violation("shell.destructive", "fork bomb", Severity.CRITICAL))
        for pipeline in parse(text):
            self._check_pipeline(pipeline, depth, out)

    def _check_pipeline(self, pipeline: Pipeline, depth: int, out: list[Violation]) -> None:
        programs = [_unwrap(c, out).program for c in pipeline]
        for position, command in enumerate(pipeline):
            words = _unwrap(command, out).words
            program = posixpath.basename(words[0]) if words else ""
            if position > 0 and (program in SHELLS or (program in INTERPRETERS and len(words) == 1)
                                 or (program in INTERPRETERS and words[1:2] == ["-"])):
                fetched = any(p in FETCHERS for p in programs[:position])
                out.append(Violation("shell.pipe_to_shell",
                                     f"output of {programs[0]!r} piped into {program!r}",
                                     Severity.CRITICAL if fetched else Severity.HIGH))
            self._check_command(program, words, command.redirects, depth, out)

    def _check_command(self, program: str, words: list[str], redirects: list[str], depth: int,
                       out: list[Violation]) -> None:
        args = words[1:]
        flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
        long_flags = {a for a in args if a.startswith("--")}
        if self.deny and program in self.deny:
            out.append(Violation("shell.denied_command", f"command {program!r} is denied", Severity.HIGH))
        if self.allow and program and program not in self.allow and program not in SHELLS:
            out.append(Violation("shell.command_not_allowed", f"command {program!r} is not allowed",
                                 Severity.HIGH))
        if program in SHELLS or program in ("eval", "source", ".") or program in INTERPRETERS:
            script = _inline_script(program, args)
            if script is not None:
                if program in INTERPRETERS and PY_REVERSE.search(script):
                    out.append(Violation("shell.reverse_shell", "inline script opens a socket to a shell",
                                         Severity.CRITICAL))
                elif depth < MAX_DEPTH and program not in INTERPRETERS:
                    self._check_text(script, depth + 1, out)
            if any(_runs_fetched(w) for w in args):
                out.append(Violation("shell.pipe_to_shell", f"{program!r} runs downloaded code",
                                     Severity.CRITICAL))
        if program == "rm" and ("r" in flags.lower() or "--recursive" in long_flags):
            targets = [a for a in args if not a.startswith("-")]
            severity = Severity.CRITICAL if any(t.rstrip("/") in ROOT_TARGETS or t in ROOT_TARGETS
                                                for t in targets) else Severity.MEDIUM
            out.append(Violation("shell.destructive", f"recursive delete of {targets or '?'}", severity))
        elif program.split(".")[0] in WIPERS or (program == "dd" and any(a.startswith("of=/dev/") for a in args)):
            out.append(Violation("shell.destructive", f"disk-wiping command {program!r}", Severity.CRITICAL))
        elif program in POWER or (program == "init" and args[:1] in (["0"], ["6"])):
            out.append(Violation("shell.destructive", f"{program!r} stops the machine", Severity.HIGH))
        elif program == "chmod" and any(re.fullmatch(r"[0-7]?777|a?\+rwx", a) for a in args) and "R" in flags:
            out.append(Violation("shell.destructive", "recursive world-writable permissions", Severity.HIGH))
        elif program == "find" and ("-delete" in args or "rm" in args):
            out.append(Violation("shell.destructive", "find deleting files", Severity.HIGH))
        elif program == "kill" and "-1" in args:
            out.append(Violation("shell.destructive", "kill every process", Severity.HIGH))
        if program in ("nc", "ncat", "netcat") and ({"e", "c"} & set(flags) or "--exec" in long_flags
                                                   or "--sh-exec" in long_flags):
            out.append(Violation("shell.reverse_shell", f"{program} executing a program", Severity.CRITICAL))
        if program == "socat" and any(a.lower().startswith(("exec:", "system:")) for a in args):
            out.append(Violation("shell.reverse_shell", "socat executing a program", Severity.CRITICAL))
        if any(REVERSE_SOCKET.search(t) for t in [*words, *redirects]):
            out.append(Violation("shell.reverse_shell", "shell I/O to a /dev/tcp socket", Severity.CRITICAL))
        if program == "chmod" and any(re.fullmatch(r"[ugoa]*\+[rwx]*s[rwx]*|[2467][0-7]{3}", a) for a in args):
            out.append(Violation("shell.privilege", "setuid/setgid bit", Severity.HIGH))
        if program == "chown" and any(a.startswith("root") for a in args):
            out.append(Violation("shell.privilege", "chown to root", Severity.HIGH))
        if any(t.startswith(("/etc/sudoers", "/etc/passwd", "/etc/shadow")) for t in redirects):
            out.append(Violation("shell.privilege", "writes to an account database", Severity.CRITICAL))
        touched = [w for w in [*args, *redirects] if "/" in w or w.startswith(".")]
        sensitive = [w for w in touched if is_sensitive(posixpath.normpath(_strip_at(w)))]
        if sensitive:
            out.append(Violation("shell.sensitive_file", f"command touches sensitive file {sensitive[0]!r}",
                                 Severity.HIGH))


def _unwrap(command: Command, out: list[Violation]) -> Command:
    """Strip `sudo`/`env`/`nohup`-style wrappers and leading VAR=value; record privilege escalation."""
    words = list(command.words)
    while words:
        head = posixpath.basename(words[0])
        if head in ESCALATION:
            out.append(Violation("shell.privilege", f"privilege escalation with {head!r}", Severity.HIGH))
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] in ("-u", "-g", "-c") and head != "su" else words[1:]
        elif head in WRAPPERS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[1:]
        else:
            break
    return Command(words=words, redirects=command.redirects)


def _runs_fetched(word: str) -> bool:
    """`$(curl ...)`, `<(wget ...)` or backticks around a downloader in an argument of a shell."""
    if "$(" not in word and "`" not in word and "<(" not in word:
        return False
    return any(c.program in FETCHERS for p in parse(word) for c in p)


def _inline_script(program: str, args: list[str]) -> str | None:
    if program == "eval":
        return " ".join(args)
    for flag in ("-c", "-e", "-lc", "-ic"):
        if flag in args:
            index = args.index(flag)
            return args[index + 1] if index + 1 < len(args) else None
    return None


def _strip_at(word: str) -> str:
    """curl -d @file, key=value/path: the path part of a word."""
    word = word.lstrip("@<>")
    return word.split("=", 1)[1] if "=" in word and not word.startswith("/") else word
