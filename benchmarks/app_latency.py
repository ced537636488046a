"""How long `pairflow app` takes to show a grid of 16 pairs (the target: under about 2 s).

Two numbers, each the median of ``--runs`` clicks after one warm-up:

- ``library_s``: the work behind the Generate button, in this process: 16 samples of
  ``--pair`` from the model (:func:`pairflow.app.core.generate`), the grid, its PNG and .npz;
- ``page_s`` (when Chromium and playwright are present): a real `pairflow app` server and
  headless Chromium, from the click on Generate until the new grid's <img> has loaded.

Both use ``--threads`` torch threads (default 1, as everything else on this shared machine).
It prints one JSON object with the machine, the load average before and after, and the times.

Usage (from the repository root):
    .venv/bin/python benchmarks/app_latency.py --model multiscale-cond --pair 37 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from speed import cpu_flags, cpu_model  # benchmarks/speed.py: this script's folder is on sys.path

CHROMIUM = Path("/usr/bin/chromium")


def library_times(model: str, pair: str, count: int, runs: int) -> list[float]:
    from pairflow.app import core

    loaded = core.load_model(model)
    times = []
    for seed in range(runs + 1):  # seed 0 is the warm-up
        start = time.perf_counter()
        images, labels = core.generate(loaded, pair=pair, count=count, seed=seed)
        core.png_bytes(core.grid_image(images))
        core.npz_bytes(images, labels)
        times.append(time.perf_counter() - start)
    return times[1:]


def page_times(model: str, pair: str, runs: int, threads: int) -> list[float] | str:
    if not CHROMIUM.is_file():
        return f"skipped: no {CHROMIUM}"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: playwright is not installed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "pairflow", "app", "--model", model, "--port", str(port)]
    cmd += ["--threads", str(threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    return "failed: the server did not start"
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator("#gen-pair textarea, #gen-pair input").first.fill(pair)
            times, src = [], None
            for seed in range(runs + 1):
                page.locator("#gen-seed input").first.fill(str(seed))
                start = time.perf_counter()
                page.click("#gen-button")
                page.wait_for_function(
                    """previous => {
                        const img = document.querySelector('#gen-grid img');
                        return img && img.src !== previous && img.complete && img.naturalWidth > 0;
                    }""",
                    arg=src or "",
                    polling=20,
                )
                times.append(time.perf_counter() - start)
                src = page.locator("#gen-grid img").first.get_attribute("src")
            browser.close()
        return times[1:]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="multiscale-cond")
    parser.add_argument("--pair", default="37")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-page", action="store_true", help="only the library number")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    lib = library_times(args.model, args.pair, args.count, args.runs)
    page = "skipped: --no-page" if args.no_page else None
    if page is None:
        page = page_times(args.model, args.pair, args.runs, args.threads)
    result = {
        "benchmark": "app_latency",
        "model": args.model,
        "pair": args.pair,
        "count": args.count,
        "runs": args.runs,
        "threads": args.threads,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "library_s": {
            "median": round(statistics.median(lib), 3),
            "all": [round(t, 3) for t in lib],
        },
    }
    if isinstance(page, str):
        result["page_s"] = page
    else:
        result["page_s"] = {
            "median": round(statistics.median(page), 3),
            "all": [round(t, 3) for t in page],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
