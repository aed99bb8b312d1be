"""Interpreters for real tools that cannot live in .venv (dicompyler-core, rt-utils).

Each such tool gets a virtual environment of its own from ``scripts/setup.sh
--test``; a test asks for an interpreter that can import it. In CI a missing
one fails the test (the set-up should have made it), elsewhere it skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_with(probe: str, env_var: str, venv: str, what: str) -> str:
    """``$env_var``, this interpreter, or ``REPO/venv``: the first that runs ``probe``."""
    candidates = [os.environ.get(env_var, ""), sys.executable, str(REPO / venv / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            done = subprocess.run([candidate, "-c", probe], capture_output=True)
            if done.returncode == 0:
                return candidate
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} must be installed in CI ({venv}, scripts/setup.sh --test)")
    pytest.skip(f"{what} is not installed ({venv} or ${env_var})")
