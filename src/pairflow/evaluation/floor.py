"""The real-vs-real floor of the sample metrics, cached beside the report.

The floor is the sample metrics of N real *training* pairs judged against the same N real
test pairs as the samples: the best a model can reach with this many samples. It depends only
on N, the seed, the data and the classifier (not on the model), and costs two classifier
passes over N pairs (~20 s at N = 10,000), so it is kept in ``floor_nN_seedS.json`` and
reused while the data root and classifier stay the same and it holds every metric of the
table (:data:`pairflow.metrics.table.METRICS`): a metric added to the table is computed
anew the first time, with no version to bump, and a cache missing one is never read as if
it held it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from torch import Tensor

__all__ = ["REFERENCE_SEED", "FLOOR_CACHE_VERSION", "cached_floor", "floor_keys"]

REFERENCE_SEED = 0
"""The test pairing every evaluation compares with, so that runs compare."""

FLOOR_CACHE_VERSION = 1
"""Of how the floor is computed: changed only when an existing metric's definition changes
(a new metric needs no change here: a cache is used only if it holds every metric)."""


def floor_keys() -> tuple[str, ...]:
    """The entries a floor must hold: every metric of the table, and where its real pairs
    came from (``held_out``)."""
    from pairflow.metrics.table import METRICS

    return (*(m.key for m in METRICS), "held_out")


def cached_floor(
    reference: Tensor,
    root: Path,
    classifier,
    seed: int,
    cache_dir: Path,
    batch_size: int = 500,
    dataset: str = "mnist",
    weights: Path | None = None,
    progress=None,
) -> tuple[dict, dict]:
    """The floor for ``reference`` (N, C, H, W), from ``cache_dir`` when the key matches.

    ``dataset`` draws the held-out training pairs; ``weights`` is the classifier's file (the
    shipped one of ``dataset`` by default), part of the cache key.

    ``progress`` is a bar factory (:func:`pairflow.progress.bars`) for its classifier passes
    when the floor is computed; None: silent.

    Returns:
        ``(floor, info)``: the metrics, and ``{"floor_cached", "floor_seconds"}``.
    """
    from pairflow.classifier import SHIPPED_WEIGHTS
    from pairflow.metrics import real_vs_real_floor
    from pairflow.utils import atomic_write_text

    n = int(reference.shape[0])
    key = {
        "version": FLOOR_CACHE_VERSION,
        "num_pairs": n,
        "seed": seed,
        "reference_seed": REFERENCE_SEED,
        "root": str(Path(root).resolve()),
        "classifier_sha256": hashlib.sha256(
            (weights or SHIPPED_WEIGHTS[dataset]).read_bytes()
        ).hexdigest(),
    }
    if dataset != "mnist":  # the keys of MNIST caches written before datasets stay valid
        key["dataset"] = dataset
    path = Path(cache_dir) / f"floor_n{n}_seed{seed}.json"
    needed = floor_keys()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        held = cached["floor"]
        # The key says which pairs and classifier; "metrics" only what the file holds.
        same = {k: v for k, v in cached["key"].items() if k != "metrics"} == key
        if same and isinstance(held, dict) and all(k in held for k in needed):
            return held, {"floor_cached": True, "floor_seconds": 0.0}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass  # absent, unreadable or of another shape: compute it again
    start = time.perf_counter()
    # Held-out training pairs seeded apart from the samples' seed (seed + 1, as in
    # benchmarks/real_floor.py, so seed 0 reproduces the floor in BENCHMARKS.md).
    floor = real_vs_real_floor(
        reference,
        root=root,
        classifier=classifier,
        seed=seed + 1,
        batch_size=batch_size,
        dataset=dataset,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    key["metrics"] = [k for k in needed if k in floor and k != "held_out"]  # what it holds
    atomic_write_text(path, json.dumps({"key": key, "floor": floor}, indent=1) + "\n")
    return floor, {"floor_cached": False, "floor_seconds": seconds}
