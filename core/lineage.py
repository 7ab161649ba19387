"""Where code and data come from: the git commit this code runs from, recorded with every model and version."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

CODE_VERSION_ENV = "INTEREST_CODE_VERSION"  # set by the image build (no .git inside a container)


@functools.cache
def code_version() -> str:
    """The git commit this code runs from (``-dirty`` with local changes), else $INTEREST_CODE_VERSION, else
    'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(CODE_VERSION_ENV, "unknown")
