"""Speed levers: fused Adam, the torch.compile fallback, --threads, bf16 conditioners; and
benchmarks/speed.py, which times every flow family against the machine's ceiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from flowtools import one_thread, randomize
from pairflow import precision as precision_module
from pairflow.flows import AffineCoupling, build_flow
from pairflow.flows.masks import alternating_mask
from pairflow.flows.nets import SeparateMLPs
from pairflow.precision import (
    InferenceProbe,
    PrecisionChoice,
    choose_model_precision,
    choose_precision,
    cpu_info,
    resolve_precision,
)
from pairflow.training import TrainConfig, load_checkpoint, train
from pairflow.training import speed as speed_module
from pairflow.training.speed import (
    CompileOrEager,
    StepProbe,
    clip_grad_norm,
    decide_compile,
    make_adam,
    set_threads,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_config(root, out, **kw) -> TrainConfig:
    values = dict(
        preset="seed", epochs=1, batch_size=16, lr=1e-3, warmup_steps=2, num_pairs=64,
        test_pairs=32, data_dir=str(root), out=str(out), device="cpu", precision="fp32",
        sample_n=4, log_every=1, model_overrides={"hidden_features": 16},
    )  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


# ---------------------------------------------------------------------------- fused Adam
def _train_steps(fused: bool, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    flow = build_flow("seed", hidden_features=16)
    randomize(flow)
    opt = make_adam(flow.parameters(), lr=1e-2, fused=fused)
    assert bool(opt.defaults["fused"]) == fused
    x = torch.randint(0, 256, (8, 1, 28, 56), dtype=torch.uint8)
    for i in range(steps):
        loss = flow.bits_per_dim(x, generator=torch.Generator().manual_seed(i)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in flow.parameters()]


def test_fused_adam_takes_the_same_steps_as_for_each_adam():
    fused, plain = _train_steps(True), _train_steps(False)
    start = [p.detach() for p in randomize(build_flow("seed", hidden_features=16)).parameters()]
    moved = max(float((a - s).abs().max()) for a, s in zip(plain, start, strict=True))
    assert moved > 1e-3  # the steps really changed the weights ...
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # ... by the same amounts


def test_make_adam_falls_back_where_fused_kernels_are_missing():
    # torch has no fused Adam for the meta device: torch itself would only fail at step().
    params = [nn.Parameter(torch.zeros(3, device="meta"))]
    assert not make_adam(params, lr=1e-3).defaults["fused"]
    assert make_adam([nn.Parameter(torch.zeros(3))], lr=1e-3).defaults["fused"]


def test_training_uses_fused_adam_and_resumes_with_it(tiny_mnist_root, tmp_path):
    train(tiny_config(tiny_mnist_root, tmp_path / "run", max_steps=2), progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["fused"] is True


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping, not clipping
def test_clip_grad_norm_gives_torchs_result_bit_for_bit(max_norm):
    ours, theirs = nn.Linear(50, 20), nn.Linear(50, 20)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(8, 50)
    for net in (ours, theirs):
        net(x).pow(2).sum().backward()
    norm = clip_grad_norm(ours.parameters(), max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert torch.equal(norm, expected) and float(norm) > 1e-3
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    if max_norm < 1:
        total = torch.cat([p.grad.flatten() for p in ours.parameters()]).norm()
        torch.testing.assert_close(total, torch.tensor(max_norm), rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------- compile
class _Net(nn.Module):
    """A loss-like module that draws noise from the generator it is given."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x, generator):
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 features, got {x.shape[1]}")
        return self.linear(x + torch.rand(x.shape, generator=generator))


def _fails_at_first_call(module):
    """Like torch.compile without a C++ compiler: wrapping works, the first call fails after
    the traced code has already drawn noise."""

    def compiled(x, generator):
        torch.rand(5, generator=generator)
        raise RuntimeError("simulated: InvalidCxxCompiler: No working C++ compiler found")

    return compiled


def test_compile_failure_at_first_call_falls_back_to_the_same_result():
    net = _Net()
    x = torch.randn(4, 3)
    expected = net(x, torch.Generator().manual_seed(0))
    wrapped = CompileOrEager(net, compile_fn=_fails_at_first_call)
    assert wrapped.is_compiled
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*C\\+\\+ compiler"):
        got = wrapped(x, torch.Generator().manual_seed(0))
    assert not wrapped.is_compiled and "InvalidCxxCompiler" in wrapped.error
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the noise state was restored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; later calls are plainly eager
        torch.testing.assert_close(wrapped(x, torch.Generator().manual_seed(0)), expected)


def test_compile_failure_at_wrapping_falls_back():
    def refuses(module):
        raise RuntimeError("simulated: torch.compile is not supported on this Python")

    with pytest.warns(RuntimeWarning, match="not supported on this Python"):
        wrapped = CompileOrEager(_Net(), compile_fn=refuses)
    assert not wrapped.is_compiled
    assert wrapped(torch.randn(2, 3), torch.Generator()).shape == (2, 1)


def test_a_callers_error_is_not_hidden_by_the_fallback():
    wrapped = CompileOrEager(_Net(), compile_fn=_fails_at_first_call)
    with pytest.raises(ValueError, match="expected 3 features, got 4"):
        wrapped(torch.randn(2, 4), torch.Generator())


def test_train_with_compile_that_fails_matches_eager_training(
    tiny_mnist_root, tmp_path, monkeypatch
):
    eager = train(tiny_config(tiny_mnist_root, tmp_path / "eager"), progress=False)

    def broken_compile(module, **kwargs):
        return _fails_at_first_call(module)

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = tiny_config(tiny_mnist_root, tmp_path / "compiled", compile=True)
    with pytest.warns(RuntimeWarning, match="training continues without it"):
        compiled = train(config, progress=False)
    assert compiled["step"] == eager["step"] == 4
    a = load_checkpoint(tmp_path / "eager" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "compiled" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_compile_must_be_a_bool_or_auto(tiny_mnist_root, tmp_path):
    with pytest.raises(ValueError, match="compile must be true, false or 'auto', got 'yes'"):
        tiny_config(tiny_mnist_root, tmp_path, compile="yes").validate()
    assert TrainConfig().compile == "auto"
    tiny_config(tiny_mnist_root, tmp_path, compile="auto").validate()


def test_decide_compile_compiles_only_where_it_was_measured_to_pay():
    many = speed_module.COMPILE_MIN_STEPS
    assert decide_compile(True, "mlp", 1) == (True, "asked for")
    assert decide_compile(False, "multiscale", 10 * many) == (False, "asked for")
    assert decide_compile("auto", "multiscale", many, compiler="g++")[0] is True
    few, why = decide_compile("auto", "multiscale", many - 1, compiler="g++")
    assert not few and f"{many - 1} planned steps, fewer than the {many}" in why
    assert not decide_compile("auto", "mlp", 10 * many, compiler="g++")[0]  # seed: no gain
    assert not decide_compile("auto", None, 10 * many, compiler="g++")[0]  # not a flow
    no_cxx = decide_compile("auto", "multiscale", 10 * many, compiler=None)
    assert no_cxx == (False, "auto: no C++ compiler found, which torch.compile needs on CPU")
    assert not decide_compile(True, "multiscale", 10 * many, custom_step=True)[0]  # the GAN
    with pytest.raises(ValueError, match="compile must be true, false or 'auto', got 'on'"):
        decide_compile("on", "multiscale", 1)


def test_train_compiles_a_long_multiscale_run_by_default(
    tiny_mnist_root, tmp_path, monkeypatch, capsys
):
    compiled = []

    def recording_compile(module, **kwargs):
        compiled.append(type(module).__name__)
        return module

    monkeypatch.setattr(torch, "compile", recording_compile)
    kw = dict(preset="multiscale", model_overrides={"hidden_channels": 4}, max_steps=2)
    train(tiny_config(tiny_mnist_root, tmp_path / "short", **kw), progress=False)
    assert compiled == [] and "compile: no (auto: 2 planned steps" in capsys.readouterr().out
    monkeypatch.setattr(speed_module, "COMPILE_MIN_STEPS", 2)
    monkeypatch.setattr(speed_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    train(tiny_config(tiny_mnist_root, tmp_path / "long", **kw), progress=False)
    assert compiled == ["_NLL"] and "compile: yes (auto: 2 planned steps" in capsys.readouterr().out
    kw["compile"] = False
    train(tiny_config(tiny_mnist_root, tmp_path / "off", **kw), progress=False)
    assert compiled == ["_NLL"] and "compile: no (asked for)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- threads
def test_threads_setting(tiny_mnist_root, tmp_path):
    assert set_threads(None) == torch.get_num_threads() == 1  # kept as it was
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        set_threads(0)
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        tiny_config(tiny_mnist_root, tmp_path, threads=0).validate()
    torch.set_num_threads(2)  # restored to 1 by the fixture
    train(tiny_config(tiny_mnist_root, tmp_path / "run", max_steps=1, threads=1), progress=False)
    assert torch.get_num_threads() == 1


def test_cli_threads_and_compile_flags(tiny_mnist_root, tmp_path):
    args = [
        sys.executable, "-m", "pairflow", "train", "--preset", "seed", "--set",
        "hidden_features=16", "--data-dir", str(tiny_mnist_root), "--device", "cpu",
        "--no-progress",
    ]  # fmt: skip
    bad = subprocess.run([*args, "--threads", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "threads must be a positive integer, got 0" in bad.stderr
    parser_help = subprocess.run([*args, "--help"], capture_output=True, text=True, timeout=120)
    assert "--threads" in parser_help.stdout and "--compile" in parser_help.stdout
    assert "--no-compile" in parser_help.stdout


# ---------------------------------------------------------------------------- bf16
def test_bf16_conditioner_keeps_affine_maths_and_log_dets_in_fp32():
    torch.manual_seed(0)
    layer = AffineCoupling(alternating_mask(64), lambda i, o: SeparateMLPs(i, o, 32), 1.0)
    randomize(layer, scale=2.0)
    x = torch.randn(5, 64)
    z32, ld32 = layer(x)
    layer.autocast_dtype = torch.bfloat16
    z, ld = layer(x)
    assert z.dtype == ld.dtype == torch.float32
    assert not torch.equal(ld, ld32)  # the conditioner really ran in bf16 ...
    torch.testing.assert_close(ld, ld32, rtol=0, atol=0.1)
    xr, ld_inv = layer.inverse(z)
    # ... yet the round trip and the log-determinants agree to fp32 rounding (bf16 affine
    # maths would be off by ~1e-2): the scale and shift are applied in fp32.
    torch.testing.assert_close(xr, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- --precision auto
def _fake_cpu(monkeypatch, capability: str, amx: bool, avx512_bf16: bool) -> None:
    info = {
        "cpu": "Fake CPU", "cores": 2, "capability": capability, "amx": amx,
        "avx512_bf16": avx512_bf16, "torch": torch.__version__,
    }  # fmt: skip
    monkeypatch.setattr(precision_module, "cpu_info", lambda: dict(info))


class _Probe:
    """Stands in for StepProbe's timing (the choice logic is under test, not the clock)."""

    def __init__(self, fp32: float, bf16: float, key: str = "fake-model"):
        self.seconds, self.key, self.calls = {"fp32": fp32, "bf16": bf16}, key, 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return dict(self.seconds)


@pytest.mark.parametrize(
    "capability, amx, avx512_bf16, expected, why",
    [
        ("AVX512", True, True, "bf16", "with AMX"),  # a Sapphire Rapids-like Xeon
        ("AVX512", False, False, "fp32", "neither AMX nor AVX512-BF16"),
        ("AVX2", False, False, "fp32", "bf16 would be emulated"),  # most laptops, this EPYC
        ("DEFAULT", False, False, "fp32", "emulated"),
    ],
)
def test_auto_precision_from_the_cpu_capability(
    monkeypatch, capability, amx, avx512_bf16, expected, why
):
    _fake_cpu(monkeypatch, capability, amx, avx512_bf16)
    probe = _Probe(fp32=1.0, bf16=0.1)  # must not be asked: the capability decides
    choice = choose_precision("auto", "cpu", probe, cache=os.devnull)
    assert choice.precision == expected and why in choice.reason and capability in choice.reason
    assert probe.calls == 0
    assert resolve_precision("auto") == expected


def test_auto_precision_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision("auto", "cuda").precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_precision("auto", "cuda") == PrecisionChoice(
        "fp32", "auto: this CUDA GPU has no bf16"
    )
    assert choose_precision("auto", "mps").precision == "fp32"


def test_explicit_precisions_are_kept_and_unknown_ones_rejected(monkeypatch):
    _fake_cpu(monkeypatch, "AVX2", False, False)
    slow = choose_precision("bf16")  # kept even where it is emulated, but said so
    assert slow.precision == "bf16" and slow.reason.startswith("asked for; warning: this AVX2")
    assert "emulated and many times slower than fp32" in slow.reason
    assert choose_precision("fp32") == PrecisionChoice("fp32", "asked for")
    assert choose_precision("bf16", "meta") == PrecisionChoice("bf16", "asked for")
    _fake_cpu(monkeypatch, "AVX512", False, True)  # native bf16 instructions: no warning
    assert choose_precision("bf16") == PrecisionChoice("bf16", "asked for")
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'half'; valid: fp32, bf16, auto"):
        choose_precision("half")


@pytest.mark.parametrize(
    "fp32, bf16, expected",
    [(1.0, 0.5, "bf16"), (1.0, 1.3, "fp32"), (1.0, 0.97, "fp32")],  # faster, slower, a tie
)
def test_avx512_bf16_without_amx_measures_and_caches(monkeypatch, tmp_path, fp32, bf16, expected):
    _fake_cpu(monkeypatch, "AVX512", False, True)
    cache = tmp_path / "cache" / "precision.json"
    probe = _Probe(fp32, bf16)
    first = choose_precision("auto", "cpu", probe, cache=cache)
    assert first.precision == expected and "measured now, cached in" in first.reason
    assert probe.calls == 1
    assert json.loads(cache.read_text())["fake-model"]["bf16_s"] == bf16
    second = choose_precision("auto", "cpu", probe, cache=cache)
    assert second.precision == expected and probe.calls == 1  # from the cache
    assert f"cached in {cache}" in second.reason and "measured now" not in second.reason
    other = _Probe(fp32=1.0, bf16=0.5, key="another-shape")  # another model: measured anew
    assert choose_precision("auto", "cpu", other, cache=cache).precision == "bf16"
    assert other.calls == 1 and set(json.loads(cache.read_text())) == {"fake-model", other.key}
    assert choose_precision("auto", "cpu", None, cache=cache).precision == "fp32"  # no model


def test_a_damaged_cache_is_measured_again(monkeypatch, tmp_path):
    _fake_cpu(monkeypatch, "AVX512", False, True)
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    probe = _Probe(fp32=1.0, bf16=0.5)
    assert choose_precision("auto", "cpu", probe, cache=cache).precision == "bf16"
    assert probe.calls == 1 and "fake-model" in json.loads(cache.read_text())


def test_cpu_info_falls_back_to_proc_cpuinfo_flags(monkeypatch):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    flags = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
    monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: flags)
    info = cpu_info()
    assert info["amx"] is True and info["avx512_bf16"] is True
    monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: {"avx2"})
    assert cpu_info()["amx"] is False and cpu_info()["avx512_bf16"] is False


def test_step_probe_times_both_precisions_and_leaves_the_rng_alone():
    probe = StepProbe(
        lambda p: build_flow("seed", hidden_features=8, precision=p, conditional=True),
        {"preset": "seed", "hidden_features": 8, "precision": "fp32"},
        batch=4,
        rounds=1,
    )
    same_shape = StepProbe(lambda p: None, {"preset": "seed", "hidden_features": 8}, batch=4)
    assert probe.key == same_shape.key  # the precision is not part of the model's shape
    assert StepProbe(lambda p: None, {"preset": "seed"}, batch=4).key != probe.key
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    seconds = probe()
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["gan", "single-flow"])
def test_step_probe_times_a_gan_by_its_own_update_and_single_images_with_their_labels(kind):
    """The GAN has no bits/dim (it owns its update) and a conditional model of single images
    knows 10 classes, not 100: the probe times each as it trains."""
    from pairflow.baselines import build_gan

    if kind == "gan":
        build = lambda p: build_gan(  # noqa: E731
            conditional=True, precision=p, latent_dim=4, generator_channels=4,
            discriminator_channels=4,
        )  # fmt: skip
    else:
        build = lambda p: build_flow(  # noqa: E731
            "multiscale", conditional=True, layout="single", conditioning="mixture",
            hidden_channels=4, num_blocks=1, precision=p,
        )  # fmt: skip
    model = build("fp32")
    probe = StepProbe(build, model.config.to_dict(), batch=4, rounds=1)
    seconds = probe()
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())


def test_train_prints_its_precision_and_measures_where_undecided(
    tiny_mnist_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PAIRFLOW_CACHE_DIR", str(tmp_path / "cache"))
    _fake_cpu(monkeypatch, "AVX2", False, False)
    train(tiny_config(tiny_mnist_root, tmp_path / "a", max_steps=1, precision="auto"), False)
    assert "precision: fp32 (auto: AVX2 CPU (Fake CPU) has neither AMX" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # nothing measured
    _fake_cpu(monkeypatch, "AVX512", False, True)  # the undecided case: the real probe runs
    train(tiny_config(tiny_mnist_root, tmp_path / "b", max_steps=1, precision="auto"), False)
    out = capsys.readouterr().out
    assert "train step took" in out and "measured now, cached in" in out
    cached = json.loads((tmp_path / "cache" / "precision.json").read_text())
    (key,) = cached
    assert "Fake CPU|AVX512|amx=False" in key and "batch=16" in key
    saved = load_checkpoint(tmp_path / "b" / "last.pt")["model_config"]["precision"]
    assert saved == ("bf16" if cached[key]["bf16_s"] < 0.95 * cached[key]["fp32_s"] else "fp32")
    train(tiny_config(tiny_mnist_root, tmp_path / "c", max_steps=1, precision="auto"), False)
    assert f"cached in {tmp_path / 'cache'}" in capsys.readouterr().out


def test_emulated_bf16_warning_goes_to_stderr_in_train_and_sample(
    tiny_mnist_root, tmp_path, monkeypatch, capsys
):
    from pairflow.cli import main

    _fake_cpu(monkeypatch, "AVX2", False, False)  # bf16 asked for where it is emulated
    train(tiny_config(tiny_mnist_root, tmp_path / "a", max_steps=1, precision="bf16"), False)
    captured = capsys.readouterr()
    assert "precision: bf16 (asked for; warning: this AVX2 CPU" in captured.err
    assert "warning" not in captured.out  # stdout keeps the run's record
    out = tmp_path / "s.npz"
    args = ["sample", "--pretrained", "seed", "--n", "2", "--out", str(out), "--precision", "bf16"]
    assert main(args) == 0  # an explicit precision is no measurement, but the warning stays
    assert "precision: bf16 (asked for; warning: this AVX2 CPU" in capsys.readouterr().err
    assert main(args[:-2] + ["--precision", "fp32"]) == 0
    assert "precision:" not in capsys.readouterr().err  # nothing to say


# ----------------------------------------------------------------- loading: auto for inference
def _tiny_flow(precision="fp32"):
    return build_flow("multiscale", hidden_channels=4, num_blocks=1, precision=precision)


def test_loaded_models_get_the_cpu_capability_choice_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRFLOW_CACHE_DIR", str(tmp_path))
    _fake_cpu(monkeypatch, "AVX2", False, False)
    assert choose_model_precision(_tiny_flow("bf16"), "auto").precision == "fp32"
    _fake_cpu(monkeypatch, "AVX512", True, True)
    assert choose_model_precision(_tiny_flow(), "auto").precision == "bf16"
    assert choose_model_precision(_tiny_flow("bf16"), "saved").precision == "bf16"
    assert choose_model_precision(_tiny_flow("bf16"), "fp32").precision == "fp32"
    assert not (tmp_path / "precision.json").exists()  # nothing was measured


@pytest.mark.parametrize(("fp32", "bf16", "chosen"), [(1.0, 0.5, "bf16"), (1.0, 0.97, "fp32")])
def test_loaded_models_on_avx512_bf16_without_amx_take_the_measured_faster_one(
    fp32, bf16, chosen, tmp_path, monkeypatch
):
    """Native bf16 without AMX was measured 2x faster than fp32 for a multiscale pass on one
    AMD EPYC and 0.75x on another CPU: the capability does not decide, the measurement does."""
    monkeypatch.setenv("PAIRFLOW_CACHE_DIR", str(tmp_path))
    _fake_cpu(monkeypatch, "AVX512", False, True)
    calls = []

    def timed(self):
        calls.append(self.model.precision)
        return {"fp32": fp32, "bf16": bf16}

    monkeypatch.setattr(precision_module.InferenceProbe, "__call__", timed)
    flow = _tiny_flow()
    choice = choose_model_precision(flow, "auto")
    assert choice.precision == chosen and "measured now" in choice.reason
    assert "inference pass took 1000 ms in fp32" in choice.reason
    assert choose_model_precision(_tiny_flow(), "auto").reason.endswith(
        f"(cached in {tmp_path / 'precision.json'})"
    )
    assert len(calls) == 1  # the second model of that shape read the cache
    (key,) = json.loads((tmp_path / "precision.json").read_text())
    assert "|inference|batch=32|" in key  # apart from the training step's measurement
    other = build_flow("multiscale", hidden_channels=8, num_blocks=1)
    choose_model_precision(other, "auto")
    assert len(calls) == 2  # another shape is measured on its own


@pytest.mark.parametrize("kind", ["flow", "gan"])
def test_inference_probe_times_both_and_restores_the_model(kind):
    from pairflow.baselines import build_gan

    if kind == "flow":
        model = build_flow("multiscale", hidden_channels=4, num_blocks=1, conditional=True,
                           layout="single", width=28, conditioning="mixture")  # fmt: skip
        x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
        y, noise = torch.tensor([3, 9]), torch.Generator()
        before = model.bits_per_dim(x, y, generator=noise.manual_seed(0))
    else:  # no likelihood: timed on drawing a batch
        model = build_gan(conditional=True, latent_dim=4, generator_channels=4,
                          discriminator_channels=4)  # fmt: skip
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    seconds = InferenceProbe(model, batch=4, rounds=1)()
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert model.precision == "fp32"
    if kind == "flow":
        assert torch.equal(model.bits_per_dim(x, y, generator=noise.manual_seed(0)), before)


def test_sample_says_which_precision_it_measured(tmp_path, monkeypatch, capsys):
    from pairflow.cli import main

    monkeypatch.setenv("PAIRFLOW_CACHE_DIR", str(tmp_path / "cache"))
    _fake_cpu(monkeypatch, "AVX512", False, True)
    out = tmp_path / "s.npz"
    args = ["sample", "--pretrained", "seed", "--n", "2", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "precision: " in err and "measured now" in err and "Fake CPU" in err
    assert main(args) == 0
    assert "measured now" not in capsys.readouterr().err  # cached: nothing more to say


# ---------------------------------------------------------------------------- benchmarks/speed.py
SPEED_SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "speed.py")
FAMILIES = ("seed", "multiscale", "multiscale:coupling=spline", "glow", "tarflow")


def _speed(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, SPEED_SCRIPT, "--threads", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_speed_benchmark_times_every_family_against_its_precisions_ceiling(
    tiny_mnist_root, tmp_path
):
    out = tmp_path / "speed.json"
    run = _speed(
        "--quick", "--sections", "matmul", "train", "sample", "--data-dir",
        str(tiny_mnist_root), "--out", str(out), "--families", *FAMILIES,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["families"]["multiscale:coupling=spline"]["overrides"] == {
        "hidden_channels": 8,
        "coupling": "spline",
    }
    # Every family's conditioners run under autocast, so each is timed in both precisions.
    expected = {(f, c, p) for f in FAMILIES for c in (False, True) for p in ("fp32", "bf16")}
    train = {(e["family"], e["conditional"], e["precision"]): e for e in result["train"]}
    sample = {(e["family"], e["conditional"], e["precision"]): e for e in result["sample"]}
    assert set(train) == expected and set(sample) == expected
    ceiling = result["matmul_ceiling_gflop_s"]
    for (family, _, precision), entry in train.items():
        assert entry["pairs_per_s"] > 0 and entry["gflop_per_step"] > 0, (family, entry)
        beside = entry["ceiling_beside"]  # the best product at the start, timed again
        assert beside["by"] == ceiling[precision]["by"] and beside["gflop_s"] > 0
        fraction = entry["achieved_gflop_s"] / beside["gflop_s"]
        assert entry["fraction_of_matmul_ceiling"] == pytest.approx(fraction, abs=2e-3)
        assert entry["matmul_share_of_step"] > 0 and entry["matmul_only_gflop_s"] > 0
        by_dtype = entry["gflop_by_dtype"]
        assert sum(by_dtype.values()) == pytest.approx(entry["gflop_per_step"], abs=0.02)
        main_dtype = "bfloat16" if precision == "bf16" else "float32"
        main = by_dtype.get(main_dtype, 0)
        if family == "tarflow" and precision == "bf16":  # its attention runs in fp32 by design
            main += sum(n for op, n in entry["gflop_by_op"].items() if "attention" in op)
        assert main > 0.9 * entry["gflop_per_step"], (family, entry)
    for cond in (False, True):  # the override reached the model: wider conditioner outputs
        spline = train[("multiscale:coupling=spline", cond, "fp32")]["gflop_per_step"]
        assert spline > train[("multiscale", cond, "fp32")]["gflop_per_step"]
        attention = train[("tarflow", cond, "fp32")]["gflop_by_op"]  # counted, not missed
        assert attention.get("aten._scaled_dot_product_flash_attention_for_cpu_backward", 0) > 0
    for entry in sample.values():
        assert entry["temperature"] == 0.7
        assert entry["pairs_per_s_batch_1"] > 0 and entry["pairs_per_s_batch_10"] > 0


@pytest.mark.parametrize(
    "family, message",
    [
        ("glwo", "unknown preset 'glwo' in family 'glwo'"),
        ("multiscale:coupling=splin", "unknown coupling 'splin'"),
        ("multiscale:coupling", "expected FIELD=VALUE, got 'coupling'"),
        ("seed:widht=3", "unknown FlowConfig field(s) widht"),
    ],
)
def test_speed_benchmark_refuses_a_bad_family_with_exit_code_2(family, message):
    run = _speed("--quick", "--sections", "train", "--families", "seed", family, timeout=120)
    assert run.returncode == 2 and message in run.stderr, run.stderr
