"""A policy bundle's Python actions (`actions.py`, `actions/**/*.py`), imported by the service itself.

NeMo imports these files too, but when one fails to import it logs the error and goes on without its
actions: the bundle builds, goes live, and every check whose flow calls one of them gets an "unknown action".
Imported here, a file that does not import is a build error of the policy, with its file and line. The
bridge registers what they define and stages the bundle for NeMo without them, so each is imported once.
"""

from __future__ import annotations

import importlib.util
import inspect
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from guardrails.policy import PolicyError

ACTIONS_FILE = "actions.py"
ACTIONS_DIR = "actions"


def action_files(bundle: Path) -> list[Path]:
    """The files NeMo would load actions from, in its order: the `actions/` folder's modules, then
    `actions.py` (whose actions win over theirs)."""
    folder, single = bundle / ACTIONS_DIR, bundle / ACTIONS_FILE
    modules = sorted(p for p in folder.rglob("*.py")
                     if p.name != "__init__.py" and "__pycache__" not in p.parts) if folder.is_dir() else []
    return [*modules, *([single] if single.is_file() else [])]


def load_actions(files: Sequence[Path]) -> dict[str, Any]:
    """Action name -> the function or class each file decorates with `@action` (NeMo's rule; a later file
    wins). Raises PolicyError, at the failing line, for a file that does not import."""
    actions: dict[str, Any] = {}
    for file in files:
        for _, member in inspect.getmembers(_import(file), _is_action):
            actions[member.action_meta["name"]] = member
    return actions


def _is_action(member: object) -> bool:
    meta = getattr(member, "action_meta", None)
    return (inspect.isfunction(member) or inspect.isclass(member)) and isinstance(meta, dict) \
        and isinstance(meta.get("name"), str)


def _import(file: Path) -> ModuleType:
    # As NeMo imports it: a module of its own, named after the file, not added to sys.modules.
    spec = importlib.util.spec_from_file_location(file.name, file)
    if spec is None or spec.loader is None:
        raise PolicyError("cannot be imported as a Python module", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a file that calls exit() must not stop the service
        raise _import_error(exc, file) from exc
    return module


def _import_error(exc: BaseException, file: Path) -> PolicyError:
    """The error at the file's own line: the syntax error's, else the last line of the file the traceback
    went through (the statement that raised, or the import of a module that failed)."""
    if isinstance(exc, SyntaxError) and exc.filename == str(file):
        detail, line = exc.msg, exc.lineno
    else:
        detail = str(exc)
        frames = traceback.extract_tb(exc.__traceback__)
        line = next((frame.lineno for frame in reversed(frames) if frame.filename == str(file)), None)
    return PolicyError(f"does not import, so none of its actions would exist: {type(exc).__name__}: {detail}",
                       file, line)
