"""Every shipped flow gives the bits/dim and the samples it gave when its reference was written.

The reference (``tests/data/shipped_reference.json``) holds, for each shipped flow in fp32,
the bits/dim of 16 of its own samples (seed 0, T = 0.8; for conditional flows with labels)
under a fixed dequantization draw, and those samples' pixel sums, so a refactor of the flow
code that changes what a weight file means fails here. Rewrite it only on purpose, after
checking that a change of numbers is intended:

    python tests/test_shipped_reference.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "shipped_reference.json"
N = 16


def _measure(name: str) -> dict:
    import pairflow
    from pairflow.pretrained import list_pretrained

    model = pairflow.load(name, precision="fp32")
    meta = list_pretrained()[name]
    cond = torch.arange(N) * 7 % model.config.num_classes if meta.get("conditional") else None
    x = model.sample((N,), cond=cond, temperature=0.8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bpd = model.bits_per_dim(x, cond, generator=torch.Generator().manual_seed(1))
    return {
        "bpd": [float(v) for v in bpd],
        "pixel_sums": [int(v) for v in x.flatten(1).sum(1, dtype=torch.int64)],
    }


def _shipped_flows() -> list[str]:
    from pairflow.pretrained import list_pretrained

    return sorted(n for n, m in list_pretrained().items() if m.get("kind", "flow") == "flow")


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_flows())
def test_shipped_flow_gives_its_reference_bits_per_dim_and_samples(name):
    reference = json.loads(REFERENCE.read_text())[name]
    got = _measure(name)
    # Samples: identical pixels where the arithmetic is the same; another CPU's fp32 kernels
    # may move a pixel across a level boundary, never a whole image.
    sums, ref_sums = torch.tensor(got["pixel_sums"]), torch.tensor(reference["pixel_sums"])
    assert (sums - ref_sums).abs().max() <= 255 * 2, (got["pixel_sums"], reference["pixel_sums"])
    torch.testing.assert_close(
        torch.tensor(got["bpd"]), torch.tensor(reference["bpd"]), rtol=1e-5, atol=1e-5
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_shipped_reference.py --write")
    out = {name: _measure(name) for name in _shipped_flows()}
    REFERENCE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
