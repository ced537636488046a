"""benchmarks/cluster_labels.py: a copy of MNIST labelled by k-means clusters of its images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from pairflow.data import PairedMNIST
from pairflow.data.mnist import read_mnist
from pairflow.flows.mixture import kmeans

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster_labels.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_labels_are_kmeans_clusters_and_the_images_are_the_same(tiny_mnist_root, tmp_path):
    out = tmp_path / "clusters"
    proc = _run("--data-dir", tiny_mnist_root, "--out", out, "--k", 4, "--iters", 10)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    images, digits = read_mnist(tiny_mnist_root, train=True)
    copy, clusters = read_mnist(out, train=True)
    assert torch.equal(copy, images)  # linked, not changed
    want = kmeans(images.flatten(1).double(), 4, iters=10, seed=0)
    assert torch.equal(clusters.long(), want) and not torch.equal(clusters, digits)
    assert report["train_cluster_sizes"] == torch.bincount(want, minlength=4).tolist()
    # each test image takes its nearest training centre
    test, test_clusters = read_mnist(out, train=False)
    points = images.flatten(1).double()
    centres = torch.stack([points[want == c].mean(0) for c in range(4)])
    nearest = torch.cdist(test.flatten(1).double(), centres).argmin(1)
    assert torch.equal(test_clusters.long(), nearest)
    # purity: the share of images whose digit is their cluster's most common one
    hits = sum(int(torch.bincount(digits[want == c].long(), minlength=10).max()) for c in range(4))
    assert report["purity_train"] == round(hits / len(digits), 4)
    # a pair's label in the copy is 10 * left cluster + right cluster
    x, y = PairedMNIST(out, train=True, num_pairs=16).get_batch(torch.arange(16))
    assert int(y.max()) < 10 * 3 + 3 + 1 and set((y // 10).tolist()) <= {0, 1, 2, 3}


def test_bad_k_is_refused_before_any_work(tiny_mnist_root, tmp_path):
    proc = _run("--data-dir", tiny_mnist_root, "--out", tmp_path / "c", "--k", 11)
    assert proc.returncode == 2 and "--k must be in 2..10" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_a_flow_trained_on_the_copy_converts_to_one_that_reads_its_own_clusters(
    tiny_mnist_root, tmp_path
):
    """benchmarks/own_clusters.py: the conditional flow of the copy and the converted flow are
    one model (the same clusters of the test images, the same log p(x | c) + log p(c))."""
    from pairflow.training import TrainConfig, load_model, train

    copy = tmp_path / "copy"
    assert _run("--data-dir", tiny_mnist_root, "--out", copy, "--k", 4).returncode == 0
    run = tmp_path / "run"
    train(TrainConfig(preset="multiscale", conditional=True, epochs=1, batch_size=16,
                      num_pairs=64, test_pairs=16, data_dir=str(copy), out=str(run),
                      device="cpu", precision="fp32", sample_n=4, lr=1e-2,
                      model_overrides=dict(hidden_channels=8, num_blocks=1)),
          progress=False)  # fmt: skip
    script = SCRIPT.with_name("own_clusters.py")
    out = tmp_path / "converted"
    args = [str(run), "--data-dir", str(tiny_mnist_root), "--copy", str(copy), "--out", str(out),
            "--k", "4", "--check-pairs", "32"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["clusters_equal_copy_labels"] == 1.0 and report["same_images"]
    assert report["max_abs_log_prob_gap"] < 1e-3
    model, state = load_model(out / "best.pt")
    assert model.config.clusters == 4 and not model.config.conditional
    assert state["train_config"]["model_overrides"]["clusters"] == 4
    again = subprocess.run([sys.executable, str(script), str(run), "--copy", str(copy),
                            "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "exists" in again.stderr
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "none"), "--copy",
                              str(copy), "--out", str(tmp_path / "o2")], capture_output=True,
                             text=True)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "o2").exists()
    no_copy = subprocess.run([sys.executable, str(script), str(run), "--copy",
                              str(tmp_path / "none"), "--out", str(tmp_path / "o3")],
                             capture_output=True, text=True)  # fmt: skip
    assert no_copy.returncode == 2 and "holds no MNIST/raw" in no_copy.stderr
