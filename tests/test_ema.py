"""The moving average of the weights: exact on hand examples, and what runs evaluate with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairflow.training import TrainConfig, load_checkpoint, load_model, train
from pairflow.training.ema import EMA
from pairflow.training.export import export_checkpoint


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("count", torch.tensor(0))


def test_ema_exact_on_a_hand_example():
    model = Tiny()
    ema = EMA(model, decay=0.5, warmup=False)
    for value, expected in [(2.0, 1.0), (4.0, 2.5), (0.0, 1.25)]:
        model.w.data.fill_(value)
        model.count.add_(1)
        ema.update(model)
        assert ema.shadow["w"].tolist() == [expected, expected]
    assert ema.shadow["count"].item() == 3  # integer buffers are copied, not averaged


def test_ema_averages_parameters_and_copies_buffers():
    # A buffer the model fixes before training (a cluster flow's centres, p(y)) must come out
    # of the average bit for bit: d * v + (1 - d) * v is not v in floating point.
    model = nn.Linear(1, 1, bias=False)
    model.register_buffer("centres", torch.tensor([255.0 / 7.0, 1.0 / 3.0]))
    _ = model.weight.data.fill_(0.0)
    ema = EMA(model, decay=0.3, warmup=False)
    _ = model.weight.data.fill_(2.0)
    model.centres.mul_(1.0)  # unchanged
    for _ in range(5):
        ema.update(model)
    assert torch.equal(ema.shadow["centres"], model.centres)
    assert ema.shadow["weight"].item() == pytest.approx(2.0 * (1 - 0.3**5))
    model.centres.fill_(4.0)  # a buffer that changes is taken as it is now
    ema.update(model)
    assert torch.equal(ema.shadow["centres"], torch.full((2,), 4.0))


def test_ema_warmup_decays():
    model = Tiny()
    ema = EMA(model, decay=0.9, warmup=True)
    # d_0 = min(0.9, 1/10) = 0.1, d_1 = min(0.9, 2/11), ... reaching 0.9 from n = 80 on.
    model.w.data.fill_(10.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["w"], torch.full((2,), 9.0))
    assert ema.current_decay() == pytest.approx(2 / 11)
    ema.num_updates = 1000
    assert ema.current_decay() == 0.9


def test_averaged_swaps_in_and_restores():
    model = Tiny()
    ema = EMA(model, decay=0.5, warmup=False)
    model.w.data.fill_(2.0)
    ema.update(model)
    model.w.data.fill_(8.0)
    with ema.averaged(model):
        assert model.w.tolist() == [1.0, 1.0]
    assert model.w.tolist() == [8.0, 8.0]
    other = EMA(Tiny(), decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.num_updates == 1
    assert other.shadow["w"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_a_run_with_ema_evaluates_resumes_and_exports_averaged_weights(tiny_mnist_root, tmp_path):
    def config(out, epochs):
        return TrainConfig(
            preset="multiscale", epochs=epochs, batch_size=16, warmup_steps=2, num_pairs=64,
            test_pairs=32, data_dir=str(tiny_mnist_root), out=str(out), device="cpu",
            precision="fp32", sample_n=4, log_every=1, ema_decay=0.9,
            model_overrides={"hidden_channels": 8, "num_blocks": 1},
        )  # fmt: skip

    train(config(tmp_path / "a", 2), progress=False)
    state = load_checkpoint(tmp_path / "a" / "last.pt")
    assert state["ema"]["num_updates"] == 8
    raw, avg = state["model"], state["ema"]["shadow"]
    differs = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], avg[k])]
    assert differs, "the average should differ from the last weights"
    model, _ = load_model(tmp_path / "a" / "last.pt")
    key = differs[0]
    torch.testing.assert_close(model.state_dict()[key], avg[key])
    # Resuming continues the same average: equal to training straight through.
    train(config(tmp_path / "b", 1), progress=False)
    train(config(tmp_path / "b", 2), resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")["ema"]
    assert resumed["num_updates"] == 8
    for k, v in avg.items():
        torch.testing.assert_close(resumed["shadow"][k], v)
    out = export_checkpoint(tmp_path / "a" / "last.pt", tmp_path / "x.pt", dtype="fp32")
    torch.testing.assert_close(load_model(out)[0].state_dict()[key], avg[key])
