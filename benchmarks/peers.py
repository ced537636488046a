"""pairflow's ``seed`` train step against peers of the same model, interleaved in one run.

The specified model: RealNVP on the 1568-vector of a 28x56 pair, 6 affine couplings with
alternating masks, separate scale and translation MLPs (2 hidden layers of 512, LeakyReLU),
scale s = tanh(s~), standard normal prior, uniform dequantization and the logit transform
(a = 1e-6). Candidates, each the same step (bits/dim loss of a batch, backward, Adam step):

- ``pairflow``: ``build_flow("seed")`` with the training loop's step (fused Adam, gradient
  clipping, finiteness check);
- ``plain``: the model written out in plain PyTorch, as a user would (``nn.Sequential`` MLPs
  on the 784 kept features, strided split, ``torch.optim.Adam`` with its defaults);
- ``normflows``: normflows' RealNVP, ``MaskedAffineFlow`` with ``nets.MLP`` scale and
  translation nets (its documented way to build this model: the nets read the whole masked
  1568-vector and write 1568 values, so twice the parameters and FLOPs). Needs normflows,
  which is not a pairflow dependency: run this script with a throwaway venv's python, e.g.
  ``python -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install --no-deps normflows``
  with torch visible to it; without normflows that candidate is left out (and says so).

Each round runs ``--pairs`` pairs of every candidate in turn (A, B, C, A, B, C ...), so a load
that changes during the run hits all of them alike; figures are medians over rounds. Prints
one JSON object: the machine (CPU, capability, AMX, cores, load), each candidate's pairs/s,
parameters and FLOPs, and pairflow's speed as a ratio to each peer.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src /tmp/peers-venv/bin/python benchmarks/peers.py \\
        --threads 1 --rounds 5
    PYTHONPATH=src python benchmarks/peers.py --quick   # seconds: small MLPs, a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.flows import build_flow
from pairflow.training.speed import clip_grad_norm, make_adam

D = 1 * 28 * 56
ALPHA = 1e-6


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def logit_bits_per_dim(x: torch.Tensor, generator, flow_log_prob) -> torch.Tensor:
    """bits/dim of pixels x (B, 1568) for a flow's log p(h) of logit-space h: (B,)."""
    y = (x.float() + torch.rand(x.shape, generator=generator)) / 256
    s = ALPHA + (1 - 2 * ALPHA) * y
    h = torch.log(s) - torch.log1p(-s)
    ld = (math.log1p(-2 * ALPHA) - torch.log(s) - torch.log1p(-s)).sum(1)
    log_p = flow_log_prob(h) + ld
    return (-log_p + D * math.log(256)) / (D * math.log(2))


# ------------------------------------------------------------------------------- plain
class PlainCoupling(nn.Module):
    def __init__(self, parity: int, hidden: int):
        super().__init__()
        self.parity = parity

        def mlp() -> nn.Sequential:
            net = nn.Sequential(
                nn.Linear(D // 2, hidden), nn.LeakyReLU(),
                nn.Linear(hidden, hidden), nn.LeakyReLU(),
                nn.Linear(hidden, D // 2),
            )  # fmt: skip
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            return net

        self.s, self.t = mlp(), mlp()

    def forward(self, x):
        kept, moved = x[:, self.parity :: 2], x[:, 1 - self.parity :: 2]
        s = torch.tanh(self.s(kept))
        moved = moved * torch.exp(s) + self.t(kept)
        pair = (kept, moved) if self.parity == 0 else (moved, kept)
        return torch.stack(pair, dim=2).flatten(1), s.sum(1)


class PlainRealNVP(nn.Module):
    def __init__(self, hidden: int = 512):
        super().__init__()
        self.layers = nn.ModuleList(PlainCoupling(k % 2, hidden) for k in range(6))

    def log_prob(self, h):
        total = torch.zeros(h.shape[0])
        for layer in self.layers:
            h, ld = layer(h)
            total = total + ld
        return total - 0.5 * (h**2).sum(1) - 0.5 * D * math.log(2 * math.pi)


# ------------------------------------------------------------------------------- steps
class Step:
    def __init__(self, name, model, loss, optimizer, batch, after_backward=None):
        self.name, self.model, self.loss, self.opt = name, model, loss, optimizer
        self.after_backward = after_backward
        data = torch.Generator().manual_seed(0)  # the same pixels for every candidate
        self.x = torch.randint(0, 256, (batch, D), dtype=torch.uint8, generator=data)
        self.noise = torch.Generator().manual_seed(0)
        self.params = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter:
            self.loss(self.x, self.noise).backward()
        self.model.zero_grad(set_to_none=True)
        self.flops = counter.get_total_flops()

    def __call__(self):
        loss = self.loss(self.x, self.noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.after_backward is not None:
            self.after_backward(loss)
        self.opt.step()


def pairflow_step(batch: int, hidden: int) -> Step:
    flow = build_flow("seed", hidden_features=hidden, precision="fp32").train()

    def loss(x, gen):
        return flow.bits_per_dim(x.view(-1, 1, 28, 56), None, gen).mean()

    def clip_and_check(value):
        norm = clip_grad_norm(flow.parameters(), 100.0)
        if not (torch.isfinite(value) and torch.isfinite(norm)):
            raise RuntimeError("non-finite loss")

    return Step(
        "pairflow", flow, loss, make_adam(flow.parameters(), lr=1e-5), batch, clip_and_check
    )


def plain_step(batch: int, hidden: int) -> Step:
    model = PlainRealNVP(hidden)

    def loss(x, gen):
        return logit_bits_per_dim(x, gen, model.log_prob).mean()

    return Step("plain", model, loss, torch.optim.Adam(model.parameters(), lr=1e-5), batch)


def normflows_step(batch: int, hidden: int) -> Step:
    import normflows as nf

    flows = []
    for k in range(6):
        b = torch.tensor([(i + k) % 2 for i in range(D)], dtype=torch.float32)  # 1 = kept
        s = nf.nets.MLP([D, hidden, hidden, D], leaky=0.01, output_fn="tanh", init_zeros=True)
        t = nf.nets.MLP([D, hidden, hidden, D], leaky=0.01, init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(b, t, s))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(D, trainable=False), flows)

    def log_prob(h):  # normflows' flows go latent -> data: data -> latent is their inverse
        log_q = torch.zeros(h.shape[0])
        z = h
        for flow in reversed(model.flows):
            z, ld = flow.inverse(z)
            log_q = log_q + ld
        return log_q + model.q0.log_prob(z)

    def loss(x, gen):
        return logit_bits_per_dim(x, gen, log_prob).mean()

    return Step("normflows", model, loss, torch.optim.Adam(model.parameters(), lr=1e-5), batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--pairs", type=int, default=1024, help="pairs per candidate per round")
    parser.add_argument("--quick", action="store_true", help="hidden width 32 (smoke test)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hidden = 32 if args.quick else 512
    rounds = 2 if args.quick else args.rounds
    result = {"benchmark": "peers", "machine": machine_info(), "quick": args.quick}
    torch.manual_seed(0)
    steps = [pairflow_step(args.batch, hidden), plain_step(args.batch, hidden)]
    try:
        steps.append(normflows_step(args.batch, hidden))
        import normflows

        result["normflows"] = getattr(normflows, "__version__", "installed")
    except ImportError:
        result["normflows"] = "not installed: left out (see the docstring)"
    times: dict[str, list[float]] = {s.name: [] for s in steps}
    n = max(1, args.pairs // args.batch)
    for r in range(rounds + 1):  # round 0 warms up
        for step in steps:
            start = time.perf_counter()
            for _ in range(n):
                step()
            if r:
                times[step.name].append((time.perf_counter() - start) / n)
        log(f"round {r}:", {k: round(v[-1], 4) for k, v in times.items() if v})
    out = {}
    for step in steps:
        t = statistics.median(times[step.name])
        out[step.name] = {
            "params": step.params,
            "gflop_per_step": round(step.flops / 1e9, 3),
            "step_s": round(t, 4),
            "pairs_per_s": round(args.batch / t, 1),
            "achieved_gflop_s": round(step.flops / t / 1e9, 1),
            "spread_step_s": [round(min(times[step.name]), 4), round(max(times[step.name]), 4)],
        }
    result["settings"] = {
        "batch": args.batch,
        "hidden": hidden,
        "precision": "fp32",
        "method": f"{rounds} interleaved rounds of {n} steps per candidate after a warm-up "
        "round; medians",
    }
    result["candidates"] = out
    mine = out["pairflow"]["pairs_per_s"]
    result["pairflow_speed_ratio"] = {
        name: round(mine / entry["pairs_per_s"], 2)
        for name, entry in out.items()
        if name != "pairflow"
    }
    result["machine"]["load_at_end"] = load()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
