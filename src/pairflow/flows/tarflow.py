"""TarFlow: causal transformer blocks over image patches, each an affine autoregressive flow.

The image (C, H, W) is cut into p x p patches, tokens of C p^2 values. Each block reads the
tokens in its order through a causal transformer, whose output at token k gives token k's
shift mu_k and log-scale alpha_k from the tokens before it, and maps (data -> latent)

    z_k = (x_k - mu_k) * exp(-alpha_k),   log|det| = -sum_k alpha_k,

an affine autoregressive flow (Kingma et al.'s IAF, run in MAF's direction). Forward, every
token's parameters come from one causal pass; the inverse needs x_{<k} before x_k, so it goes
token by token, each step reading the keys and values of the steps before it from a cache.
Between blocks the order reverses, so that every token is, in some block, conditioned on every
other.

Token order: a pair (S = 2 sides, e.g. 1x28x56) is cut digit by digit, every patch of the left
digit in row-major order, then every patch of the right digit. A block in that order models
the right digit given the whole left one, and the reversed block the left given the whole
right; a row-major order across the pair would interleave the digits, so that a token of one
digit saw only the upper rows of the other. A single image (S = 1) is plain row-major.

References:
    Zhai, Zhang, Gu, Susskind, Jaitly et al., "Normalizing Flows are Capable Generative
    Models" (TarFlow), arXiv 2412.06329, 2024.
    Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation",
    NeurIPS 2017.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Transform
from pairflow.flows.guidance import Guided

__all__ = [
    "Patches",
    "CausalTransformer",
    "AutoregressiveBlock",
    "TransformerFlow",
    "KVCache",
    "LayerCache",
]


class LayerCache:
    """One attention layer's keys and values of the steps so far, (B, heads, steps, d).

    Without autograd (sampling) they are written in place into tensors allocated once for
    all ``capacity`` steps; with it (a differentiated inverse) they are concatenated, since
    autograd may still hold the earlier ones.

    Arguments:
        capacity: the most steps it will hold (the tokens of an image).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the steps ``k``, ``v`` (B, heads, L, d); return every step's so far."""
        start, self.size = self.size, self.size + k.shape[2]
        if torch.is_grad_enabled():
            if self.keys is not None:
                k, v = torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)
            self.keys, self.values = k, v
            return k, v
        if self.keys is None:
            b, heads, _, d = k.shape
            self.keys = k.new_empty(b, heads, self.capacity, d)
            self.values = v.new_empty(b, heads, self.capacity, d)
        self.keys[:, :, start : self.size] = k
        self.values[:, :, start : self.size] = v
        return self.keys[:, :, : self.size], self.values[:, :, : self.size]


KVCache = list[LayerCache]
"""One :class:`LayerCache` per transformer layer."""


class Patches(Transform):
    """Cut images (B, C, H, W) into tokens (B, N, C p^2), side by side digit by digit.

    The width holds ``sides`` images side by side (a pair: 2); each is cut row-major into
    p x p patches, and the sides follow each other: the left digit's (H/p)(W/(S p)) tokens,
    then the right digit's. Volume preserving (log-det 0).

    Arguments:
        shape: one image's (C, H, W); H divisible by p, W by S p.
        patch_size: p.
        sides: S, images side by side along the width.

    Example:
        >>> x = torch.arange(8.0).view(1, 1, 2, 4)  # two 2x2 images side by side
        >>> Patches((1, 2, 4), 1, sides=2)(x)[0].flatten().tolist()
        [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]
    """

    def __init__(self, shape: tuple[int, int, int], patch_size: int, sides: int = 1):
        super().__init__()
        c, h, w = shape
        if h % patch_size or w % (sides * patch_size):
            raise ValueError(
                f"patches of {patch_size}x{patch_size} over {sides} side(s) need the height "
                f"divisible by {patch_size} and the width by {sides * patch_size}; got {h}x{w}"
            )
        self.shape = (c, h, w)
        self.patch_size = patch_size
        self.sides = sides
        self.grid = (h // patch_size, w // (sides * patch_size))  # patches per side: rows, cols

    @property
    def num_tokens(self) -> int:
        """N: tokens per image."""
        return self.sides * self.grid[0] * self.grid[1]

    @property
    def features(self) -> int:
        """C p^2: values per token."""
        return self.shape[0] * self.patch_size**2

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, (c, _, _), p, (rows, cols) = x.shape[0], self.shape, self.patch_size, self.grid
        t = x.reshape(b, c, rows, p, self.sides, cols, p)
        t = t.permute(0, 4, 2, 5, 1, 3, 6)  # (B, S, rows, cols, C, p, p)
        return t.reshape(b, self.num_tokens, self.features), x.new_zeros(b)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, (c, h, w), p, (rows, cols) = z.shape[0], self.shape, self.patch_size, self.grid
        t = z.reshape(b, self.sides, rows, cols, c, p, p).permute(0, 4, 2, 5, 1, 3, 6)
        return t.reshape(b, c, h, w), z.new_zeros(b)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which token k reads tokens <= k, with an optional cache.

    Under autocast in bfloat16 (or float16) the projections run in that precision, but the
    attention itself runs in float32: q, k and v are cast up, the attention is computed with
    autocast off, and its output is cast back for the output projection. On a CPU without
    AMX (AVX512-BF16), torch's ``scaled_dot_product_attention`` is several times slower in
    bfloat16 than in float32, its backward above all (at the preset's size, 4 heads of 32
    over 98 tokens, it took most of a bf16 train step), and so is its one-query cached step
    when sampling (see BENCHMARKS.md). The cache then holds float32 keys and values, so that
    each sampling step casts only its new token's. In float32 (or float64) nothing is cast.

    Both paths take the same float32 attention on purpose. An explicit masked matmul-softmax
    with bfloat16 matmuls made the train step about 9% faster still, but it was slower for
    a cached step, and it rounds the attention scores to bfloat16: with it for a whole
    sequence and float32 for the cached steps, the inverse no longer undid the forward (a
    small random flow's round trip was off by 0.28 in pixels of [0, 1]). With float32
    attention in both, the bf16 inverse undoes the bf16 forward to float32's rounding
    (about 1e-7 there).

    Attributes:
        upcast_attention: compute the attention in float32 under autocast on the CPU (the
            default; on CUDA it stays in autocast's precision); False leaves it in autocast's
            precision everywhere (kept to time the two against each other).
    """

    upcast_attention = True

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: Tensor, cache: LayerCache | None = None) -> Tensor:
        """h (B, L, W) -> (B, L, W). With ``cache`` (this layer's, empty at the first
        step), h holds the next token (L = 1), which attends to the cached ones too."""
        b, length, width = h.shape
        if cache is not None and length != 1:
            raise ValueError("a cached step reads one token at a time")
        qkv = self.qkv(h).view(b, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, d)
        # On the CPU only: measured there (the CPU kernel's bf16 backward is the slow part);
        # on CUDA a bf16 flash attention is the fast path and stays.
        upcast = self.upcast_attention and h.device.type == "cpu"
        if upcast and q.dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(h.device.type, enabled=False):
                a = self._attend(q.float(), k.float(), v.float(), cache).to(q.dtype)
        else:
            a = self._attend(q, k, v, cache)
        return self.out(a.transpose(1, 2).reshape(b, length, width))

    @staticmethod
    def _attend(q: Tensor, k: Tensor, v: Tensor, cache: LayerCache | None) -> Tensor:
        if cache is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        k, v = cache.append(k, v)
        return F.scaled_dot_product_attention(q, k, v)  # the new token reads all before it


class TransformerLayer(nn.Module):
    """A pre-norm transformer layer: causal self-attention, then a 4x-wide GELU MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, h: Tensor, cache: LayerCache | None = None) -> Tensor:
        h = h + self.attention(self.norm1(h), cache)
        return h + self.mlp(self.norm2(h))


class CausalTransformer(nn.Module):
    """The conditioner of an autoregressive block: tokens (B, N, F) -> parameters (B, N, 2F),
    the parameters of token k a function of the tokens before k (and the context) only.

    Its input at position k is token k - 1 (a learned start vector at position 0, so that
    token 0 gets a learned transform, label-dependent in a conditional flow), plus a learned
    positional embedding and the projected label context, which every position receives.
    The causal attention then keeps position k from reading inputs after it. The output
    layer starts at zero, so each block starts as the identity.

    Arguments:
        features: F, values per token.
        length: N, tokens per image.
        width, depth, heads: the transformer's width, layers and attention heads.
        context_features: size of the flattened context (the label embeddings (B, S, E):
            S E), 0 for none.
    """

    def __init__(
        self,
        features: int,
        length: int,
        width: int,
        depth: int,
        heads: int,
        context_features: int = 0,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"the width {width} must be divisible by the heads {heads}")
        self.features = features
        self.length = length
        self.proj_in = nn.Linear(features, width)
        self.start = nn.Parameter(torch.randn(width) * 0.02)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.context_in = nn.Linear(context_features, width) if context_features else None
        self.layers = nn.ModuleList(TransformerLayer(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, 2 * features)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def condition(self, context: Tensor | None) -> Tensor | None:
        """The context as one vector added to every position, (B, 1, W), or None."""
        if self.context_in is None:
            return None
        if context is None:
            raise ValueError("this block is conditional: pass the label context")
        return self.context_in(context.flatten(1))[:, None]

    def _output(self, h: Tensor, cache: KVCache | None) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, None if cache is None else cache[i])
        return self.proj_out(self.norm(h))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Tokens (B, N, F) -> parameters (B, N, 2F), all positions in one causal pass."""
        b, n, _ = x.shape
        h = torch.cat([self.start.expand(b, 1, -1), self.proj_in(x[:, :-1])], dim=1)
        h = h + self.position[:n]
        cond = self.condition(context)
        return self._output(h if cond is None else h + cond, None)

    def new_cache(self) -> KVCache:
        """An empty key-value cache for :meth:`step`."""
        return [LayerCache(self.length) for _ in self.layers]

    def step(
        self, previous: Tensor | None, k: int, cond: Tensor | None, cache: KVCache, batch: int
    ) -> Tensor:
        """The parameters (B, 1, 2F) of token k, from token k - 1 (``previous``, (B, 1, F);
        None for k = 0) and the cached keys and values of the positions before it.

        ``cond`` is :meth:`condition`'s vector; the cache is filled with position k."""
        if previous is None:
            h = self.start.expand(batch, 1, -1)
        else:
            h = self.proj_in(previous)
        h = h + self.position[k]
        return self._output(h if cond is None else h + cond, cache)


class AutoregressiveBlock(Transform):
    r"""An affine autoregressive flow over tokens whose conditioner is a causal transformer.

    Forward (data -> latent), in the block's order of the tokens:

    .. math:: z_k = (x_k - \mu_k(x_{<k})) \exp(-\alpha_k(x_{<k})), \quad
              \log|\det J| = -\textstyle\sum_k \alpha_k,

    with the log-scales bounded softly, :math:`\alpha = b \tanh(\tilde\alpha / b)`. One causal
    pass gives every token's parameters. :meth:`inverse` goes token by token with a key-value
    cache (N steps of one token each); :meth:`inverse_uncached` recomputes the whole sequence
    at every step, the reference it must agree with.

    The transformer runs under ``torch.autocast`` in :attr:`autocast_dtype` where the flow's
    precision sets it; its parameters are cast back, so the affine maths and the
    log-determinant stay in the input's precision.

    It follows classifier-free guidance
    (:attr:`~pairflow.flows.base.Transform.follows_guidance`), as a coupling does: given a
    :class:`~pairflow.flows.guidance.Guided` context, the transformer runs under the label's
    context and under the null label's, and its outputs, every token's raw log-scale and
    shift mu_k, are extrapolated, (1 + w) out_c - w out_u, before the soft bound makes
    alpha_k of the log-scale. For a fixed w the block is still an affine autoregressive
    flow (token k's parameters still read only x_{<k}); its cached inverse keeps one cache
    for each of the two passes.

    Arguments:
        conditioner: the :class:`CausalTransformer`.
        reverse: read the tokens last to first (the order alternates between blocks).
        scale_bound: b, the soft bound of the log-scales.

    Example:
        >>> block = AutoregressiveBlock(CausalTransformer(4, 6, width=8, depth=1, heads=2))
        >>> z, ld = block(torch.randn(2, 6, 4))
        >>> z.shape, ld.shape
        (torch.Size([2, 6, 4]), torch.Size([2]))
    """

    runs_in_low_precision = True
    follows_guidance = True

    def __init__(self, conditioner: CausalTransformer, reverse: bool = False, scale_bound=2.0):
        super().__init__()
        self.net = conditioner
        self.reverse = reverse
        self.scale_bound = float(scale_bound)

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def _exact(self, device: torch.device):
        """Autocast off inside :meth:`_autocast`'s region (nothing to do without it)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, enabled=False)

    def _affine(self, raw: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(alpha, mu) from the conditioner's output, in the data's precision."""
        raw_alpha, mu = raw.to(dtype).chunk(2, dim=-1)
        b = self.scale_bound
        return b * torch.tanh(raw_alpha / b), mu

    def params(self, x: Tensor, context: Tensor | Guided | None = None) -> tuple[Tensor, Tensor]:
        """(alpha, mu) of every token (B, N, F), tokens in the block's order.

        Under guidance (``context`` a :class:`Guided`) the transformer's output, cast to the
        data's precision, is extrapolated from the null label's to the label's before the
        soft bound, as :meth:`Coupling._params <pairflow.flows.coupling.Coupling._params>`
        does with its conditioner's."""
        if isinstance(context, Guided):
            return self._affine(context.apply(lambda c: self._conditioner(x, c)), x.dtype)
        return self._affine(self._conditioner(x, context), x.dtype)

    def _conditioner(self, x: Tensor, context: Tensor | None) -> Tensor:
        """The transformer's output (B, N, 2F) in the data's precision."""
        with self._autocast(x.device):
            raw = self.net(x, context)
        return raw.to(x.dtype)

    def _ordered(self, t: Tensor) -> Tensor:
        return t.flip(1) if self.reverse else t

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self._ordered(x)
        alpha, mu = self.params(x, context)
        z = (x - mu) * torch.exp(-alpha)
        return self._ordered(z), -alpha.sum(dim=(1, 2))

    def inverse(self, z: Tensor, context: Tensor | Guided | None = None) -> tuple[Tensor, Tensor]:
        z = self._ordered(z)
        batch = z.shape[0]
        tokens: list[Tensor] = []
        total = z.new_zeros(batch)
        # One autocast region around all N steps, not one per step: autocast keeps the
        # weights it cast until its outermost region ends, so they are cast once, not N
        # times (at batch 1 in bf16 the casts took a fifth of sampling). The affine maths
        # steps out of it, into the data's precision.
        with self._autocast(z.device):
            # Under guidance, the label's pass and the null label's each keep their own
            # context vector and cache: two batch-B steps per token, each exactly the
            # unguided step. One step on a doubled batch of 2B cost the same at batch 100
            # (less at batch 1), but its matmuls round differently from batch B's, so w = 0
            # and w = -1 were no longer the two models bit for bit (see BENCHMARKS.md).
            if isinstance(context, Guided):
                passes = context.map(lambda c: (self.net.condition(c), self.net.new_cache()))
            else:
                passes = (self.net.condition(context), self.net.new_cache())
            for k in range(z.shape[1]):
                raw = self._step(passes, tokens[-1] if tokens else None, k, batch, z.dtype)
                with self._exact(z.device):
                    alpha, mu = self._affine(raw, z.dtype)
                    tokens.append(z[:, k : k + 1] * torch.exp(alpha) + mu)
                    total = total + alpha.sum(dim=(1, 2))
        return self._ordered(torch.cat(tokens, dim=1)), total

    def _step(
        self,
        passes: Guided | tuple[Tensor | None, KVCache],
        previous: Tensor | None,
        k: int,
        batch: int,
        dtype: torch.dtype,
    ) -> Tensor:
        """Token k's transformer output (B, 1, 2F) in ``dtype``, from the (context vector,
        cache) of one pass, or of both under guidance, extrapolated by :meth:`Guided.mix`
        (elementwise, which autocast leaves in ``dtype``)."""

        def run(state: tuple[Tensor | None, KVCache]) -> Tensor:
            cond, cache = state
            return self.net.step(previous, k, cond, cache, batch).to(dtype)

        return passes.apply(run) if isinstance(passes, Guided) else run(passes)

    def inverse_uncached(
        self, z: Tensor, context: Tensor | Guided | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`inverse` without the cache: a full causal pass per token (N times the cost)."""
        z = self._ordered(z)
        n = z.shape[1]
        x = torch.zeros_like(z)
        for k in range(n):
            alpha, mu = self.params(x, context)  # token k's from x_{<k}: later ones unread
            xk = z[:, k : k + 1] * torch.exp(alpha[:, k : k + 1]) + mu[:, k : k + 1]
            x = torch.cat([x[:, :k], xk, x[:, k + 1 :]], dim=1)
        alpha, _ = self.params(x, context)
        return self._ordered(x), alpha.sum(dim=(1, 2))


class TransformerFlow(Transform):
    """TarFlow's body: images (B, C, H, W) -> patches -> ActNorm -> T autoregressive blocks.

    An ActNorm (one scale and shift per token position, set from the first training batch)
    standardises the logit-space tokens before the first block, as ActNorm does before every
    coupling of the ``multiscale`` and ``glow`` archs: the blocks start as the identity, and
    raw logits (down to logit(1e-6) ~ -13.8) would otherwise start the flow far from N(0, I).

    The latent keeps the image's layout (each patch back where it was cut from), so a label
    prior that gives the left half of z to the left digit still finds it there.

    Arguments:
        shape: one image's (C, H, W).
        patch_size: p (H divisible by p, W by ``sides`` p).
        sides: images side by side (2 for pairs): the token order, see :class:`Patches`.
        blocks: T; every second block reads the tokens in reverse.
        width, depth, heads: each block's transformer.
        context_features: size of the flattened label context (0: unconditional body).
        scale_bound: soft bound of each block's log-scales.

    Example:
        >>> flow = TransformerFlow((1, 4, 8), 2, sides=2, blocks=2, width=8, depth=1, heads=2)
        >>> z, ld = flow(torch.randn(3, 1, 4, 8))
        >>> z.shape, ld.shape, len(flow.blocks), flow.patches.num_tokens
        (torch.Size([3, 1, 4, 8]), torch.Size([3]), 2, 8)
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        patch_size: int,
        sides: int = 1,
        blocks: int = 4,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        context_features: int = 0,
        scale_bound: float = 2.0,
    ):
        super().__init__()
        self.patches = Patches(shape, patch_size, sides)
        n, f = self.patches.num_tokens, self.patches.features
        self.actnorm = ActNorm(n)  # over (B, N, F): one scale per token position
        self.blocks = Compose(
            AutoregressiveBlock(
                CausalTransformer(f, n, width, depth, heads, context_features),
                reverse=bool(t % 2),
                scale_bound=scale_bound,
            )
            for t in range(blocks)
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tokens, _ = self.patches(x)
        tokens, ld_norm = self.actnorm(tokens)
        z, logdet = self.blocks(tokens, context)
        return self.patches.inverse(z)[0], ld_norm + logdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tokens, _ = self.patches(z)
        x, logdet = self.blocks.inverse(tokens, context)
        x, ld_norm = self.actnorm.inverse(x)
        return self.patches.inverse(x)[0], logdet + ld_norm
