"""Speed settings of a training run: intra-op threads, fused Adam, ``torch.compile`` when it pays.

Each helper falls back to the plain PyTorch path, with a warning, where its lever is not
available, so a run never fails for want of a speed-up. The measured effect of each lever is
in BENCHMARKS.md, "Speed".
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from pairflow.models import SelfUpdating
from pairflow.options import PRECISIONS
from pairflow.precision import probe_key
from pairflow.training.config import TrainConfig

__all__ = [
    "set_threads",
    "make_adam",
    "clip_grad_norm",
    "CompileOrEager",
    "decide_compile",
    "COMPILE_MIN_STEPS",
    "StepProbe",
]

COMPILE_MIN_STEPS = 2000
"""``--compile auto`` compiles a convolutional flow's loss for runs of at least this many steps.

Compiling ``multiscale``'s loss costs 50-75 s before the first step on an idle AMX CPU and
saves 1.1-1.3x per step afterwards (BENCHMARKS.md, "Speed"), so it pays back after a few
hundred steps there; on a loaded or slower CPU the compile itself takes minutes, so the
threshold keeps a margin of several times that. ``seed`` (fully connected) gained nothing
from compiling on either CPU measured, so ``auto`` never compiles it."""


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (``None``: keep torch's default); return the count.

    On a machine shared with other jobs, OpenMP workers that spin while waiting fight those
    jobs for the cores; set ``OMP_WAIT_POLICY=PASSIVE`` in the environment before starting
    Python (it cannot be changed once torch is loaded), or use fewer threads.

    Arguments:
        threads: threads for torch's CPU kernels (>= 1), or ``None``.

    Example:
        >>> set_threads(None) == torch.get_num_threads()
        True
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def make_adam(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0, fused: bool = True
) -> torch.optim.Adam:
    """``torch.optim.Adam``, fused (one kernel for the whole update) where torch supports it.

    The fused update computes the same step as the default for-each one (up to rounding) and is
    1.3-1.4x faster for a train step of the 12.8M-parameter ``seed`` preset on CPU, where the
    update is a large share of the step. Where torch refuses ``fused=True`` (an older torch,
    an unsupported device or dtype) the default implementation is used instead.

    Arguments:
        params: the parameters to optimise.
        lr, weight_decay: Adam's learning rate and L2 penalty.
        fused: try the fused implementation first.

    Returns:
        The optimizer; ``optimizer.defaults["fused"]`` says which one it is.

    Example:
        >>> opt = make_adam(nn.Linear(2, 2).parameters(), lr=1e-3)
        >>> opt.defaults["fused"]
        True
    """
    params = list(params)
    if fused and _fused_adam_supported(params):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _fused_adam_supported(params: list[nn.Parameter]) -> bool:
    # torch checks the device and dtype only at the first step(), so ask the same check now
    # rather than fail mid-run (e.g. on a device without fused kernels).
    try:
        from torch.optim.optimizer import _device_dtype_check_for_fused
    except ImportError:  # a torch without fused CPU kernels (< 2.4)
        return False
    try:
        for p in params:
            _device_dtype_check_for_fused(p)
    except RuntimeError:
        return False
    return True


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that touches the gradients only when it clips.

    torch multiplies every gradient by min(1, max_norm / norm) at every step, to avoid a
    device sync; the training loop syncs on the norm anyway (to skip non-finite steps), and on
    CPU the multiply is a pass over all gradients (about 4% of a ``seed`` step). Multiplying by
    1 changes nothing, so the result is the same, bit for bit.

    Arguments:
        parameters: parameters whose ``.grad`` to clip in place.
        max_norm: the largest allowed total 2-norm of the gradients.

    Returns:
        The total norm of the gradients before clipping (a 0-dim tensor, maybe non-finite).

    Example:
        >>> p = nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> float(clip_grad_norm([p], 1.0)), [round(g, 4) for g in p.grad.tolist()]
        (5.0, [0.6, 0.8])
    """
    parameters = [p for p in parameters if p.grad is not None]
    if not hasattr(torch.nn.utils, "get_total_norm"):  # torch < 2.6
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    total = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if bool(total > max_norm):  # NaN compares False: such a step is skipped by the caller
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


class CompileOrEager:
    """Call ``torch.compile(module)``; if compiling fails, warn once and call ``module`` itself.

    ``torch.compile`` compiles lazily, on the first call (and again for new input shapes), so a
    missing C++ toolchain or an unsupported operation shows up there, not when wrapping. This
    wrapper catches that failure, restores the state of the random generators passed in (a
    partly run graph may have drawn from them), and reruns the call eagerly; later calls stay
    eager. An error that the eager call raises as well is the caller's and propagates.

    The compiled module shares its parameters with ``module``: save ``module``'s state dict.

    Arguments:
        module: the module to run (e.g. the training loss).
        compile_fn: the compiler, ``torch.compile`` by default (tests pass a failing one).
        **compile_kwargs: passed to ``compile_fn``.

    Example:
        >>> loss = CompileOrEager(nn.Linear(3, 1), compile_fn=lambda m: m)
        >>> loss(torch.randn(2, 3)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        module: nn.Module,
        compile_fn: Callable[..., Callable] | None = None,
        **compile_kwargs: Any,
    ):
        self.module = module
        self.compiled: Callable | None = None
        self.error: str | None = None
        compile_fn = torch.compile if compile_fn is None else compile_fn
        try:
            self.compiled = compile_fn(module, **compile_kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            self._fall_back(err)

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go through the compiled module."""
        return self.compiled is not None

    def _fall_back(self, err: BaseException) -> None:
        self.compiled = None
        self.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        warnings.warn(
            f"torch.compile failed ({self.error}); training continues without it (eager). "
            "Compiling needs a working C++ compiler on CPU; drop --compile to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        generators = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Generator)]
        states = [g.get_state() for g in generators]
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - see the class docstring
            for g, state in zip(generators, states, strict=True):
                g.set_state(state)
            result = self.module(*args, **kwargs)  # raises if the error is not the compiler's
            self._fall_back(err)
            return result


def decide_compile(
    setting: bool | str,
    arch: str | None,
    planned_steps: int,
    custom_step: bool = False,
    compiler: str | None = "auto",
) -> tuple[bool, str]:
    """Whether to ``torch.compile`` the training loss, and why (``pairflow train`` prints it).

    ``True`` and ``False`` are kept (``True`` is refused for a model with its own train step,
    which the loop does not compile). ``"auto"`` compiles only where it was measured to pay:
    a convolutional flow (``arch == "multiscale"``) in a run of at least
    :data:`COMPILE_MIN_STEPS` planned steps, with a C++ compiler on the ``PATH``.

    Arguments:
        setting: ``True``, ``False`` or ``"auto"`` (``TrainConfig.compile``).
        arch: the flow's ``arch`` (``"mlp"``, ``"multiscale"``), None for other models.
        planned_steps: the steps the run will take if it runs to the end.
        custom_step: the model steps its own optimisers (the GAN).
        compiler: the C++ compiler found (``"auto"``: look for ``$CXX``, ``c++``, ``g++``).

    Example:
        >>> decide_compile("auto", "mlp", 10_000)
        (False, 'auto: not for arch mlp, where compiling was measured to gain nothing')
    """
    if custom_step:
        return False, "the model runs its own train step, which is not compiled"
    if setting is True or setting is False:
        return setting, "asked for"
    if setting != "auto":
        raise ValueError(f"compile must be true, false or 'auto', got {setting!r}")
    if arch is None:  # a baseline
        return False, "auto: not a multiscale flow, the one model compiling was measured to pay for"
    if arch != "multiscale":
        return False, f"auto: not for arch {arch}, where compiling was measured to gain nothing"
    if planned_steps < COMPILE_MIN_STEPS:
        return False, (
            f"auto: {planned_steps} planned steps, fewer than the {COMPILE_MIN_STEPS} that pay "
            "back the compile time"
        )
    if compiler == "auto":
        import os

        candidates = [os.environ.get("CXX"), "c++", "g++", "clang++"]
        compiler = next((c for c in candidates if c and shutil.which(c)), None)
    if compiler is None:
        return False, "auto: no C++ compiler found, which torch.compile needs on CPU"
    return True, f"auto: {planned_steps} planned steps of a convolutional flow"


class StepProbe:
    """Time a model's train step (forward, backward, Adam) in fp32 and in bf16, interleaved.

    Arguments:
        build: ``build(precision) -> model`` with ``model.bits_per_dim(x, cond)`` (or, for
            a :class:`~pairflow.models.SelfUpdating` model such as the GAN, its own
            ``make_optimizers`` and ``train_step``) and a ``model.config`` that has ``shape``,
            ``conditional`` and ``num_classes``.
        fingerprint: what identifies the model's shape apart from the precision (its config
            as a dict); with the batch, threads and the CPU it keys the cache.
        batch: pairs per step, the run's batch size.
        device: where the run trains.
        rounds: timed steps per precision, after one warm-up step each (median).
        train_config: the run's :class:`~pairflow.training.TrainConfig`, which a
            :class:`~pairflow.models.SelfUpdating` model builds its optimisers from (default:
            the defaults).

    Example:
        >>> from pairflow.flows import build_flow
        >>> probe = StepProbe(lambda p: build_flow("seed", hidden_features=8, precision=p),
        ...                   {"preset": "seed", "hidden_features": 8}, batch=4, device="cpu")
        >>> sorted(probe())
        ['bf16', 'fp32']
    """

    def __init__(
        self,
        build: Callable[[str], nn.Module],
        fingerprint: dict,
        batch: int,
        device: torch.device | str = "cpu",
        rounds: int = 3,
        train_config: Any = None,
    ):
        self.build, self.batch, self.rounds = build, batch, rounds
        if train_config is None:
            train_config = TrainConfig()
        self.train_config = train_config
        self.device = torch.device(device)
        self.key = probe_key(fingerprint, batch, self.device)

    def __call__(self) -> dict[str, float]:
        """Median seconds per train step of each precision."""
        with torch.random.fork_rng(devices=[]):  # the run's own random streams stay untouched
            torch.manual_seed(0)
            models = {p: self.build(p).to(self.device).train() for p in PRECISIONS}
            config = models["fp32"].config
            x = torch.randint(0, 256, (self.batch, *config.shape), dtype=torch.uint8)
            x = x.to(self.device)
            for m in models.values():  # a flow reading its own clusters needs centres first
                clusters = getattr(m, "clusters", None)
                if clusters is not None and not clusters.fitted:  # k images at least
                    clusters.fit_sides(x.repeat(-(-clusters.k // (len(x) * clusters.sides)),
                                                1, 1, 1))  # fmt: skip
            cond = None
            if getattr(config, "conditional", False):  # pair labels, or 0..9 for single images
                cond = torch.randint(0, config.num_classes, (self.batch,), device=self.device)
            # A model that owns its update (the GAN) is timed by it; the others by a step on
            # their bits/dim, as the training loop takes it.
            own = {p: isinstance(m, SelfUpdating) for p, m in models.items()}
            optimizers = {
                p: m.make_optimizers(self.train_config)
                if own[p]
                else make_adam(m.parameters(), lr=1e-6)
                for p, m in models.items()
            }
            times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
            for i in range(self.rounds + 1):  # round 0 is the warm-up
                for p in PRECISIONS:
                    start = time.perf_counter()
                    if own[p]:
                        models[p].train_step(x, cond, optimizers[p], None, math.inf)
                    else:
                        loss = models[p].bits_per_dim(x, cond).mean()
                        optimizers[p].zero_grad(set_to_none=True)
                        loss.backward()
                        optimizers[p].step()
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    if i:
                        times[p].append(time.perf_counter() - start)
        return {p: statistics.median(t) for p, t in times.items()}
