"""The ``tarflow`` preset's sampling time and train step, beside the ``multiscale`` step.

Sampling inverts every autoregressive block token by token with a key-value cache (98 steps
per block for a pair in 4x4 patches), so its cost is many small matmuls, not one large one.
Candidates (each timed once per round, in turn, so that a changing load hits all alike;
medians over rounds):

- ``sample100`` / ``sample1``: ``flow.sample`` of 100 pairs / 1 pair, conditional
  (``--pair``-style labels, the preset's default ``conditioning="both"``), temperature 0.7;
- ``sample100_guided`` / ``sample1_guided``: the same with classifier-free guidance, w = 1.5
  (the preset with ``label_dropout=0.1``: one null label more, the same sizes); each token
  step runs the transformer under the label and under the null label, each pass with its own
  key-value cache. ``:doubled`` appended (``sample100_guided:fp32:doubled``) runs the two
  passes instead as one batch of 2B with one cache, the other way to do it, timed in the
  same rounds;
- ``step_tarflow`` / ``step_multiscale``: the training loop's step (loss, backward, clipping,
  Adam) at batch 64, unconditional, for the two presets at their default sizes;
- any of them with ``:fp32`` or ``:bf16`` appended runs in that precision instead of
  ``--precision``'s, so both precisions are timed in the same rounds; ``:bf16:old`` runs
  bf16 as it was before 2026-12-06's changes, to time the two in the same rounds: the
  attention in bf16 (``upcast_attention = False``) and, in sampling, autocast entered
  and left at every token step;
- ``attention_sdpa:P`` / ``attention_masked:P``: the attention alone at the preset's size
  (batch 64, 4 heads of 32 over 98 tokens), forward and backward, 8 times, in precision P:
  torch's ``scaled_dot_product_attention``, or an explicit masked matmul-softmax (softmax
  in fp32), each under autocast in bf16 for P = bf16.

Prints one JSON object: the machine (CPU, torch's capability, AMX, threads, load at start
and end), the model sizes and, per candidate, seconds, pairs/s and the spread.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/tarflow_sampling.py --threads 2
    .venv/bin/python benchmarks/tarflow_sampling.py --threads 2 --candidates sample100 \
        sample100:bf16 step_tarflow step_tarflow:bf16   # both precisions, interleaved
    .venv/bin/python benchmarks/tarflow_sampling.py --threads 1 --candidates \
        step_tarflow:bf16:old step_tarflow:bf16 sample100:bf16:old sample100:bf16
    .venv/bin/python benchmarks/tarflow_sampling.py --threads 1 --candidates sample100 \
        sample100_guided sample100_guided:fp32:doubled   # guidance's cost, two ways
    .venv/bin/python benchmarks/tarflow_sampling.py --quick   # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.flows import build_flow
from pairflow.flows.guidance import Guided
from pairflow.flows.tarflow import AutoregressiveBlock, CausalSelfAttention
from pairflow.options import PRECISIONS
from seed_step import FlowStep


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Sample:
    """``flow.sample`` of ``n`` pairs of a conditional tarflow with given labels, guided by
    ``guidance`` (a flow with label dropout) or not (None)."""

    def __init__(self, n: int, precision: str, overrides: dict, guidance: float | None = None):
        torch.manual_seed(0)
        dropout = {} if guidance is None else {"label_dropout": 0.1}
        self.flow = build_flow(
            "tarflow", conditional=True, precision=precision, **dropout, **overrides
        )
        self.flow.eval()
        self.batch = n
        self.guidance = guidance
        self.cond = torch.arange(n) % 100
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self) -> None:
        self.flow.sample(
            (self.batch,), cond=self.cond, temperature=0.7, generator=self.generator,
            guidance=self.guidance,
        )  # fmt: skip


class Attention:
    """The attention alone, forward and backward, 8 times at the preset's size."""

    batch = 64

    def __init__(self, masked: bool, precision: str, overrides: dict):
        heads, width = overrides.get("tar_heads", 4), overrides.get("tar_width", 128)
        length = 98
        gen = torch.Generator().manual_seed(0)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.qkv = [
            torch.randn(self.batch, heads, length, width // heads, generator=gen, dtype=dtype)
            for _ in range(3)
        ]
        self.mask = torch.ones(length, length, dtype=torch.bool).tril()
        self.masked, self.dtype = masked, dtype

    def attend(self, q, k, v):
        if not self.masked:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        s = s.masked_fill(~self.mask, float("-inf"))
        return torch.softmax(s.float(), dim=-1).to(v.dtype) @ v

    def __call__(self) -> None:
        for _ in range(8):
            q, k, v = (t.detach().requires_grad_() for t in self.qkv)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype != torch.float32):
                out = self.attend(q, k, v)
            out.float().sum().backward()


def parameters(flow) -> int:
    return sum(p.numel() for p in flow.parameters())


def inverse_per_token(self, z, context=None):
    """The old :meth:`AutoregressiveBlock.inverse`: an autocast region per token step."""
    z = self._ordered(z)
    cache = self.net.new_cache()
    with self._autocast(z.device):
        cond = self.net.condition(context)
    tokens = []
    total = z.new_zeros(z.shape[0])
    for k in range(z.shape[1]):
        with self._autocast(z.device):
            raw = self.net.step(tokens[-1] if tokens else None, k, cond, cache, z.shape[0])
        alpha, mu = self._affine(raw, z.dtype)
        tokens.append(z[:, k : k + 1] * torch.exp(alpha) + mu)
        total = total + alpha.sum(dim=(1, 2))
    return self._ordered(torch.cat(tokens, dim=1)), total


def inverse_doubled(self, z, context=None):
    """:meth:`AutoregressiveBlock.inverse` with guidance's two passes as one batch of 2B."""
    if not isinstance(context, Guided):
        return AutoregressiveBlock.inverse(self, z, context)
    z = self._ordered(z)
    b = z.shape[0]
    cache = self.net.new_cache()
    tokens = []
    total = z.new_zeros(b)
    with self._autocast(z.device):
        cond = self.net.condition(torch.cat([context.cond, context.uncond]))
        for k in range(z.shape[1]):
            previous = tokens[-1].repeat(2, 1, 1) if tokens else None
            raw = self.net.step(previous, k, cond, cache, 2 * b).to(z.dtype)
            with self._exact(z.device):
                alpha, mu = self._affine(context.mix(*raw.chunk(2)), z.dtype)
                tokens.append(z[:, k : k + 1] * torch.exp(alpha) + mu)
                total = total + alpha.sum(dim=(1, 2))
    return self._ordered(torch.cat(tokens, dim=1)), total


def doubled(flow) -> None:
    """Guidance's two passes as one doubled batch in every block's cached inverse."""
    for module in flow.modules():
        if isinstance(module, AutoregressiveBlock):
            module.inverse = types.MethodType(inverse_doubled, module)


def old_bf16(flow) -> None:
    """bf16 as it was: the attention in autocast's precision, autocast entered per token."""
    for module in flow.modules():
        if isinstance(module, CausalSelfAttention):
            module.upcast_attention = False
        if isinstance(module, AutoregressiveBlock):
            module.inverse = types.MethodType(inverse_per_token, module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=["sample100", "sample1", "step_tarflow", "step_multiscale"],
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=INT",
        help="a tarflow size to override, e.g. --set tar_width=96 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke test)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {k: int(v) for k, v in (s.split("=", 1) for s in args.set)}
    small = {"hidden_channels": 8}
    if args.quick:
        overrides = {"tar_width": 8, "tar_heads": 2, "tar_layers": 1, "tar_blocks": 2}
    rounds = 1 if args.quick else args.rounds
    made = {}
    for name in args.candidates:
        log("building", name)
        kind, _, precision = name.partition(":")
        precision, _, variant = precision.partition(":")
        precision = precision or args.precision
        if precision not in PRECISIONS:
            parser.error(f"unknown precision {precision!r} in {name!r}")
        if variant not in ("", "old", "doubled"):
            parser.error(f"unknown variant {variant!r} in {name!r} (only 'old' or 'doubled')")
        if variant == "doubled" and not kind.endswith("_guided"):
            parser.error(f"{name!r}: only a guided candidate has a 'doubled' variant")
        if kind in ("sample100", "sample1", "sample100_guided", "sample1_guided"):
            n = 100 if kind.startswith("sample100") else 1
            made[name] = Sample(n, precision, overrides, 1.5 if "_guided" in kind else None)
        elif kind == "step_tarflow":
            made[name] = FlowStep(64, precision, overrides, preset="tarflow")
        elif kind == "step_multiscale":
            made[name] = FlowStep(64, precision, small if args.quick else {}, preset="multiscale")
        elif kind in ("attention_sdpa", "attention_masked"):
            made[name] = Attention(kind == "attention_masked", precision, overrides)
        else:
            parser.error(f"unknown candidate {name!r}")
        if variant == "old":
            if not hasattr(made[name], "flow"):
                parser.error(f"{name!r}: only a flow's candidate has an 'old' variant")
            old_bf16(made[name].flow)
        elif variant == "doubled":
            doubled(made[name].flow)
    result = {
        "benchmark": "tarflow_sampling",
        "machine": machine_info(),
        "precision": args.precision,
        "quick": args.quick,
        "tarflow_overrides": overrides,
        "parameters": {
            name: parameters(step.flow) for name, step in made.items() if hasattr(step, "flow")
        },
    }
    times: dict[str, list[float]] = {name: [] for name in made}
    for r in range(rounds + 1):  # round 0 warms up
        for name, step in made.items():
            start = time.perf_counter()
            step()
            if r:
                times[name].append(time.perf_counter() - start)
        log(f"round {r}:", {k: round(v[-1], 3) for k, v in times.items() if v})
    out = {}
    for name, step in made.items():
        t = statistics.median(times[name])
        out[name] = {
            "batch": step.batch,
            "seconds": round(t, 3),
            "pairs_per_s": round(step.batch / t, 1),
            "spread_s": [round(min(times[name]), 3), round(max(times[name]), 3)],
        }
        if hasattr(step, "flow"):
            out[name]["precision"] = step.flow.config.precision
        if getattr(step, "guidance", None) is not None:
            out[name]["guidance"] = step.guidance
        if name.startswith("step"):
            out[name]["steps_per_s"] = round(1 / t, 3)
    result["candidates"] = out
    result["load_at_end"] = load()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
