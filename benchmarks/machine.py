"""The machine a benchmark ran on, for every speed figure's JSON: CPU, capability, AMX, load.

Imported by the other benchmark scripts (this folder is on ``sys.path`` when one of them runs).
"""

from __future__ import annotations

import os
import platform
import subprocess

import torch

from pairflow.precision import cpu_info


def load() -> dict:
    """1/5/15-minute load averages and ``uptime``'s line, to judge how shared the cores were."""
    one, five, fifteen = os.getloadavg()
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        line = ""
    return {
        "load_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "uptime": line.strip(),
    }


def machine_info() -> dict:
    """CPU model, cores, torch's capability string, AMX and AVX512-BF16, threads, the load."""
    return {
        **cpu_info(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "load_at_start": load(),
    }
