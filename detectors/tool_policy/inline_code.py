"""Code an interpreter runs from its command line (`python3 -c`, `perl -e`, `php -r`, `node -e`, `awk '...'`):
the shell commands it hands to the system, the trees it deletes, the sockets it wires to a shell.

`python3 -c "import os; os.system('rm -rf /')"` is `rm -rf /` in a wrapper: the strings passed to the usual
process-spawning calls are read back as shell commands and judged by the shell rules.
"""

from __future__ import annotations

import re

INTERPRETERS = frozenset({"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "deno",
                          "bun"})
AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
INLINE_FLAGS = frozenset({"-c", "-e", "--eval", "--command"})  # php's is -r, which is ruby's require
FLAG_GROUP = re.compile(r"-[a-zA-Z]*[eE]")  # perl -ne / -pe / -lne 'code', ruby -ne: the code is the next word
# A string literal: '...' or "..." with escapes.
_STRING = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# Calls that run their string (or list of strings) as a command: os.system, subprocess.*, popen, exec*, spawn*,
# child_process.execSync, PHP's shell_exec/passthru/proc_open, Lua's os.execute...
SPAWN = re.compile(r"\b(?:system|popen\d?|exec[a-zA-Z]*|spawn[a-zA-Z]*|check_output|check_call|call|run|Popen|"
                   rf"getoutput|getstatusoutput|shell_exec|passthru|proc_open|execute)\s*\(\s*(\[[^\]]*\]|{_STRING})",
                   re.S)
BACKTICKS = re.compile(r"`([^`]+)`")  # Perl, Ruby and PHP run a backticked string as a command
STRING = re.compile(_STRING, re.S)
# shutil.rmtree("/"), FileUtils.rm_rf("/"), fs.rmSync("/", {recursive: true}), rimraf.sync("/")...
TREE_DELETE = re.compile(rf"\b(?:rmtree|rm_rf|rm_r|remove_dir_all|rmSync|rimraf(?:\.sync)?)\s*\(\s*({_STRING})")
# A socket opened and wired to a shell: the reverse-shell one-liners of Python, Perl, PHP, Ruby and Node. Searched
# in two steps (the shell after the first socket): one `socket.*shell` pattern re-scanned the rest of the code from
# every socket word (a second for 20 KB of them).
SOCKET = re.compile(r"\bsocket\b|fsockopen|TCPSocket|Socket\.new|net\.connect|new\s+net\.Socket|IO::Socket")
TO_SHELL = re.compile(r"subprocess|pty\.spawn|os\.dup2|\bexec\b|\bsystem\b|\bspawn\b|/bin/(?:ba)?sh|\bsh\s+-i")


def inline_code(program: str, args: list[str]) -> str | None:
    """The code an interpreter runs from its arguments: the value of -c/-e/-r (also glued: `-e'...'`), or awk's
    program; None when it runs a file or stdin."""
    if program in AWKS:
        return next((a for a in args if not a.startswith("-")), None)
    if program not in INTERPRETERS:
        return None
    for k, arg in enumerate(args):
        if arg in INLINE_FLAGS or (arg == "-r" and program == "php") or (
                program in ("perl", "ruby") and FLAG_GROUP.fullmatch(arg)):
            return args[k + 1] if k + 1 < len(args) else None
        if arg[:2] in ("-c", "-e") and len(arg) > 2 and not arg[2:].isalpha():
            return arg[2:]  # glued: ruby -e'code' reads as one word `-ecode`
    return None


def spawned_commands(code: str) -> list[str]:
    """The shell commands the code hands to the system: string literals passed to spawning calls (a list of
    strings joined as words), and backticked strings."""
    commands = [_literal_command(m.group(1)) for m in SPAWN.finditer(code)]
    commands += [m.group(1) for m in BACKTICKS.finditer(code)]
    return [c for c in commands if c.strip()]


def deleted_trees(code: str) -> list[str]:
    return [_unquote(m.group(1)) for m in TREE_DELETE.finditer(code)]


def opens_reverse_shell(code: str) -> bool:
    socket = SOCKET.search(code)
    return socket is not None and TO_SHELL.search(code, socket.end()) is not None


def _literal_command(literal: str) -> str:
    if literal.startswith("["):
        return " ".join(_unquote(s) for s in STRING.findall(literal))
    return _unquote(literal)


def _unquote(literal: str) -> str:
    return literal[1:-1].replace("\\'", "'").replace('\\"', '"')
