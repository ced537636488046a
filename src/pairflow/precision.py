"""Which arithmetic a model's conditioners run in: ``--precision auto`` resolved for this machine.

bf16 pays only where the hardware multiplies it natively and fast: a CUDA GPU with bf16, or a
CPU with AMX tiles. Elsewhere it is slower than fp32, sometimes by far (BENCHMARKS.md,
"Speed"): on an AVX2-only CPU torch emulates bf16 matmuls (10x slower for ``seed``, 26x for
``multiscale``), and on AVX-512 with AVX512-BF16 but no AMX the answer depends on the model and
the CPU (``multiscale`` ran at 0.75x fp32's speed on one such CPU and 2x on another, ``seed``
about 1x). Only that last case is not decided by the capability alone: there a short
measurement of the model's own train step in both precisions decides, and its result is cached
per machine and model shape in ``$PAIRFLOW_CACHE_DIR`` (default ``$XDG_CACHE_HOME/pairflow``,
i.e. ``~/.cache/pairflow``).

Example:
    >>> resolve_precision("fp32")
    'fp32'
    >>> choose_precision("fp32").reason
    'asked for'
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairflow.options import PRECISIONS

__all__ = [
    "InferenceProbe",
    "PrecisionChoice",
    "choose_model_precision",
    "choose_precision",
    "cpu_info",
    "precision_cache_path",
    "probe_key",
    "resolve_precision",
]

BF16_MARGIN = 0.95
"""bf16 is chosen only if its measured step takes under 95% of fp32's: on a tie, fp32 (exact)."""


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why, in words for the user (``pairflow train`` prints it)."""

    precision: str
    reason: str

    @property
    def is_warning(self) -> bool:
        """Whether the reason warns (bf16 asked for where it is only emulated): callers print
        it to stderr, and print it even where they print no other reason."""
        return _WARNING in self.reason


_WARNING = "; warning: "


# ------------------------------------------------------------------------------- the CPU
def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_cpu_check(name: str) -> bool | None:
    # torch.cpu._is_amx_tile_supported and friends are the only AMX / AVX512-BF16 checks torch
    # has (torch.backends.cpu.get_cpu_capability() stops at "AVX512"); they are private, so
    # fall back to the kernel's flags where a torch lacks them.
    check = getattr(torch.cpu, name, None)
    if check is None:
        return None
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a broken private check: use /proc/cpuinfo instead
        return None


def cpu_info() -> dict[str, Any]:
    """What decides CPU speed here: model, cores, torch's capability string, AMX, AVX512-BF16.

    Every speed figure pairflow's benchmarks print carries this dict.

    Returns:
        ``{"cpu", "cores", "capability", "amx", "avx512_bf16", "torch"}``; ``capability`` is
        ``torch.backends.cpu.get_cpu_capability()`` (``"DEFAULT"``, ``"AVX2"``, ``"AVX512"``...).

    Example:
        >>> sorted(cpu_info())
        ['amx', 'avx512_bf16', 'capability', 'cores', 'cpu', 'torch']
    """
    flags = _cpuinfo_flags()
    amx = _torch_cpu_check("_is_amx_tile_supported")
    bf16 = _torch_cpu_check("_is_avx512_bf16_supported")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx": amx if amx is not None else ("amx_tile" in flags and "amx_bf16" in flags),
        "avx512_bf16": bf16 if bf16 is not None else "avx512_bf16" in flags,
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------- the cache
def precision_cache_path() -> Path:
    """``$PAIRFLOW_CACHE_DIR/precision.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = os.environ.get("PAIRFLOW_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "pairflow")
    return Path(root) / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: measure again and rewrite it
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict) -> bool:
    from pairflow.utils import atomic_write_text

    data = _read_cache(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        return False  # a read-only home: the choice stands, it is just not remembered
    return True


# ------------------------------------------------------------------------------- measuring
def probe_key(fingerprint: dict, batch: int, device: torch.device, what: str = "") -> str:
    """The cache key of a measurement: the CPU, torch, threads, device, batch and the model's
    shape (its config without the precision); ``what`` tells other measurements apart."""
    shape = {k: v for k, v in fingerprint.items() if k != "precision"}
    digest = hashlib.sha1(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()
    info = cpu_info()
    return (
        f"{info['cpu']}|{info['capability']}|amx={info['amx']}|torch={info['torch']}"
        f"|threads={torch.get_num_threads()}|{device.type}|{what}batch={batch}|{digest[:16]}"
    )


class InferenceProbe:
    """Time a loaded model's inference in fp32 and in bf16, interleaved: what ``auto`` decides
    by when a model is loaded to evaluate or sample (no gradients, no optimiser).

    A likelihood model is timed on the bits/dim of a batch of random pixels, a model without
    one (the GAN) on drawing a batch. The model's own precision is restored afterwards.

    Arguments:
        model: a model with a settable ``precision`` and a ``config`` (``shape``,
            ``conditional``, ``num_classes``).
        batch: images per timed pass.
        rounds: timed passes per precision, after one warm-up pass each (median).

    Example:
        >>> from pairflow.flows import build_flow
        >>> flow = build_flow("seed", hidden_features=8)
        >>> sorted(InferenceProbe(flow, batch=4, rounds=1)()), flow.precision
        (['bf16', 'fp32'], 'fp32')
    """

    what = "inference pass"

    def __init__(self, model: nn.Module, batch: int = 32, rounds: int = 2):
        self.model, self.batch, self.rounds = model, batch, rounds
        device = next(model.parameters()).device
        self.key = probe_key(model.config.to_dict(), batch, device, what="inference|")

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        """Median seconds per pass of each precision."""
        model, config = self.model, self.model.config
        device = next(model.parameters()).device
        saved = model.precision
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = torch.randint(0, 256, (self.batch, *config.shape), dtype=torch.uint8).to(device)
            cond = None
            if getattr(config, "conditional", False):
                cond = torch.randint(0, config.num_classes, (self.batch,), device=device)

            def run() -> None:
                if hasattr(model, "bits_per_dim"):
                    model.bits_per_dim(x, cond)
                else:
                    model.sample(self.batch, cond=cond)

            times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
            try:
                for i in range(self.rounds + 1):  # round 0 is the warm-up
                    for p in PRECISIONS:
                        model.precision = p
                        start = time.perf_counter()
                        run()
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        if i:
                            times[p].append(time.perf_counter() - start)
            finally:
                model.precision = saved
        return {p: statistics.median(t) for p, t in times.items()}


def choose_model_precision(model: nn.Module, precision: str) -> PrecisionChoice:
    """The precision to run an already built (loaded) ``model`` in, for ``"auto"``, ``"fp32"``,
    ``"bf16"`` or ``"saved"`` (the one it was trained in).

    ``auto`` decides as :func:`choose_precision`; where the CPU alone does not decide
    (AVX512-BF16 without AMX), an :class:`InferenceProbe` of the model measures both once and
    the answer is cached for the machine and the model's shape.
    """
    if precision == "saved":
        return PrecisionChoice(model.precision, "saved: the precision it was trained in")
    device = next(model.parameters()).device
    probe = InferenceProbe(model) if precision == "auto" else None
    return choose_precision(precision, device, probe)


# ------------------------------------------------------------------------------- choosing
def choose_precision(
    precision: str,
    device: torch.device | str = "cpu",
    probe: Callable[[], dict[str, float]] | None = None,
    cache: str | os.PathLike | None = None,
) -> PrecisionChoice:
    """Resolve ``"auto"`` to the faster precision here, saying why; fp32 and bf16 stay as given.

    ``auto`` gives bf16 on a CUDA GPU with bf16 support and on a CPU with AMX; fp32 on CPUs
    without AVX512-BF16 (bf16 is emulated there) and on other devices. On a CPU with
    AVX512-BF16 but no AMX, ``probe`` decides (a
    :class:`~pairflow.training.speed.StepProbe` of the model to train, or an
    :class:`InferenceProbe` of a loaded one):
    bf16 only if its step is clearly faster (under 95% of fp32's), and the measurement is
    cached under ``probe.key``. Without a probe that case gives fp32.

    Arguments:
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.
        device: the device the model trains on.
        probe: measures the model's step, ``probe() -> {"fp32": s, "bf16": s}``; has ``.key``.
        cache: the cache file (default :func:`precision_cache_path`).

    Returns:
        A :class:`PrecisionChoice`.

    Example:
        >>> choose_precision("auto", "meta")
        PrecisionChoice(precision='fp32', reason='auto: no bf16 fast path known on meta')
    """
    if precision in PRECISIONS:
        return PrecisionChoice(precision, "asked for" + _emulated_warning(precision, device))
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16, auto")
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "auto: this CUDA GPU supports bf16")
        return PrecisionChoice("fp32", "auto: this CUDA GPU has no bf16")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"auto: no bf16 fast path known on {device.type}")
    info = cpu_info()
    name = f"{info['capability']} CPU ({info['cpu']})"
    if info["amx"]:
        return PrecisionChoice("bf16", f"auto: {name} with AMX, which multiplies bf16 natively")
    if not info["avx512_bf16"]:
        return PrecisionChoice(
            "fp32", f"auto: {name} has neither AMX nor AVX512-BF16, so bf16 would be emulated"
        )
    if probe is None:
        return PrecisionChoice("fp32", f"auto: {name} without AMX, bf16 not measured")
    path = Path(cache) if cache is not None else precision_cache_path()
    key = getattr(probe, "key", None)
    entry = _read_cache(path).get(key) if key is not None else None
    where = f"cached in {path}"
    if not (isinstance(entry, dict) and {"fp32_s", "bf16_s"} <= entry.keys()):
        seconds = probe()
        entry = {
            "fp32_s": round(seconds["fp32"], 5),
            "bf16_s": round(seconds["bf16"], 5),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if key is None or not _write_cache(path, key, entry):
            where = "not cached"
        where = f"measured now, {where}"
    fp32_s, bf16_s = float(entry["fp32_s"]), float(entry["bf16_s"])
    what = getattr(probe, "what", "train step")
    chosen = "bf16" if bf16_s < BF16_MARGIN * fp32_s else "fp32"
    return PrecisionChoice(
        chosen,
        f"auto: {name} without AMX; this model's {what} took {fp32_s * 1e3:.0f} ms in fp32, "
        f"{bf16_s * 1e3:.0f} ms in bf16 ({where})",
    )


def _emulated_warning(precision: str, device: torch.device | str) -> str:
    """A warning to append when bf16 is asked for on a CPU that can only emulate it."""
    if precision != "bf16" or torch.device(device).type != "cpu":
        return ""
    info = cpu_info()
    if info["amx"] or info["avx512_bf16"]:
        return ""
    return (
        f"{_WARNING}this {info['capability']} CPU has neither AMX nor AVX512-BF16, so bf16 is "
        "emulated and many times slower than fp32; auto picks fp32 here"
    )


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for ``precision`` (``"auto"`` resolved without measuring).

    See :func:`choose_precision`; this is its answer without a probe, for code that has no
    model to measure (AVX512-BF16 CPUs without AMX then get fp32).
    """
    return choose_precision(precision, device).precision
