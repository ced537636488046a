"""Helper for the CLI tests: run ``python -m pairflow`` as a user would."""

from __future__ import annotations

import subprocess
import sys


def pairflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow", *args], capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
