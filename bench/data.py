"""Where the evaluations find the public labelled datasets (never shipped with the package).

`$GUARDRAILS_EVAL_DATA` when set, else `shared/data` beside the repository (`../shared/data` from its root), so
a checkout elsewhere finds its own copy. The eval scripts' `--data`/`--dataset` options still win.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "GUARDRAILS_EVAL_DATA"
REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The directory that holds the datasets (InjecAgent/, XSTest/, Mu-SHROOM/, presidio-research/, ...)."""
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else REPO.parent / "shared" / "data"
