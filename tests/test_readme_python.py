"""The README's Python API section runs as written (shipped weights only: no data needed)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _section_code(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under '## {title}'"
    return "\n".join(blocks)


def test_python_api_section_runs_as_written(capsys):
    code = _section_code("Python API")
    exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "torch.Size([16, 1, 28, 56]) torch.uint8 cpu"
    assert printed[1] == "torch.Size([16])"
    assert 0.5 < float(printed[2]) < 3  # bits/dim of a sample of the shipped model
    assert printed[3] == "True False"  # the shipped flow's bound, and its exact view
    assert printed[4] == "True"  # the importance-weighted bound is below the one-draw bound
    assert printed[5] == "[37, 37, 37, 37]"  # the flow's own p(y | x) reads its samples of 37
