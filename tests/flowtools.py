"""Helpers for the flow tests: non-trivial random weights and autograd Jacobians."""

from __future__ import annotations

import torch
from torch import nn

from pairflow.flows import ActNorm, Transform


@torch.no_grad()
def randomize(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Give every parameter random non-zero values, so no layer is the identity.

    Zero-initialised last layers make forward and inverse trivially agree; tests of
    invertibility and log-determinants must not rely on them. Weights get N(0, scale^2 /
    fan_in) noise added, vectors (biases, gains, ActNorm) N(0, 0.1^2); ActNorm layers are
    marked initialised so a training-mode forward does not overwrite them.
    """
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        if p.dim() >= 2:
            fan_in = p[0].numel() if p.dim() != 3 else p.shape[1]  # batched (K, in, out)
            p.add_(noise * scale / fan_in**0.5)
        else:
            p.add_(noise * 0.1)
    for m in module.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return module


def jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at a single sample x (1, ...), from torch.autograd.functional.jacobian."""
    jac = torch.autograd.functional.jacobian(fn, x)
    d = x.numel()
    return torch.linalg.slogdet(jac.reshape(d, d))[1]


def check_transform(
    t: Transform, x: torch.Tensor, cond=None, jacobian: bool = True, fp32_tol: float = 1e-4
) -> None:
    """inverse(forward(x)) == x, log-dets cancel and match autograd, in float64 and float32
    (there within ``fp32_tol``: the float64 checks are the exact ones)."""
    t64 = t.double()
    x64 = x.double()
    c64 = cond.double() if cond is not None and cond.is_floating_point() else cond
    z, ld = t64(x64, c64)
    assert ld.shape == (x.shape[0],)
    assert z.shape != x.shape or not torch.allclose(z, x64), "identity: randomize it"
    xr, ld_inv = t64.inverse(z, c64)
    torch.testing.assert_close(xr, x64, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-9)
    if jacobian:
        for i in range(min(2, x.shape[0])):
            ci = None if c64 is None else c64[i : i + 1]
            xi, zi = x64[i : i + 1], z[i : i + 1]
            fwd = jacobian_logdet(lambda v, ci=ci: t64(v, ci)[0], xi)
            torch.testing.assert_close(ld[i], fwd, rtol=1e-9, atol=1e-8)
            inv = jacobian_logdet(lambda v, ci=ci: t64.inverse(v, ci)[0], zi)
            torch.testing.assert_close(ld_inv[i], inv, rtol=1e-9, atol=1e-8)
    t32 = t64.float()
    c32 = cond.float() if cond is not None and cond.is_floating_point() else cond
    z32, ld32 = t32(x.float(), c32)
    xr32, ld32_inv = t32.inverse(z32, c32)
    torch.testing.assert_close(xr32, x.float(), rtol=fp32_tol, atol=fp32_tol)
    torch.testing.assert_close(ld32 + ld32_inv, torch.zeros_like(ld32), rtol=0, atol=1e-3)


class one_thread:
    """Context manager: run torch on one thread (tiny tensors; the cores are shared).

    On a loaded machine, OpenMP threads of a tiny model spin-wait for each other and a step
    can take 10x longer than on one thread.
    """

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
