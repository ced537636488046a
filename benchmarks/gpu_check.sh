#!/usr/bin/env bash
# The CUDA path of pairflow, in one prepared run: every check a GPU machine should pass.
#
# 1. the test suite, on a machine where torch sees a GPU (the tests themselves run on the CPU;
#    the CUDA-specific checks are step 2);
# 2. the maths on the GPU: every flow arch and prior (multiscale, glow, class mixture,
#    variational dequantization) in float32 on cuda against the same weights on the CPU,
#    inverse(forward(x)) == x, sampling with a CUDA generator, bf16 autocast finite;
# 3. a short train / sample / evaluate round with --device cuda --precision bf16;
# 4. the speed benchmark: train-step pairs/s on the GPU per preset, fp32 and bf16.
#
# Prints one JSON line per figure (steps 2 and 4) and writes everything under $OUT.
#
# Usage (from the repository root, with MNIST under $DATA):
#     DATA=../shared/data OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
# Exit status: non-zero at the first failing step (set -e).
set -euo pipefail
PY=${PY:-python}
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-$PWD/src}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY - <<'EOF'
import json, torch
assert torch.cuda.is_available(), "torch sees no CUDA device: nothing to check here"
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name(0),
                  "bf16": torch.cuda.is_bf16_supported()}))
EOF

echo "== 1. test suite"
PAIRFLOW_DATA=$DATA $PY -m pytest -q -x -p no:cacheprovider 2>&1 | tail -n 5 | tee "$OUT/pytest.txt"

echo "== 2. the maths on the GPU"
$PY - <<'EOF' | tee "$OUT/cuda_maths.jsonl"
import json, torch
from pairflow.flows import build_flow

torch.manual_seed(0)
cases = {
    "multiscale": dict(),
    "glow": dict(),
    "glow-additive": dict(coupling="additive"),
    "multiscale-mixture": dict(conditional=True, conditioning="mixture"),
    "multiscale-vardeq": dict(dequantization="variational"),
}
x = torch.randint(0, 256, (16, 1, 28, 56), dtype=torch.uint8)
for name, overrides in cases.items():
    preset = name.split("-")[0]
    cpu = build_flow(preset, **overrides).eval()
    with torch.no_grad():
        for p in cpu.parameters():  # non-identity weights
            p.add_(torch.randn_like(p) * 0.01)
    gpu = build_flow(preset, **overrides).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    g_cpu, g_gpu = torch.Generator().manual_seed(1), torch.Generator("cuda").manual_seed(1)
    with torch.no_grad():
        z_cpu = cpu.encode(x)
        z_gpu = gpu.encode(x.cuda())
        back = gpu.decode(z_gpu)
        bpd = gpu.bits_per_dim(x.cuda(), generator=g_gpu)
        s = gpu.sample((8,), temperature=0.7, generator=torch.Generator("cuda").manual_seed(2))
        gpu.precision = "bf16"
        bpd16 = gpu.bits_per_dim(x.cuda(), generator=torch.Generator("cuda").manual_seed(1))
    row = {
        "case": name,
        "encode_max_abs_diff_cpu_gpu": float((z_cpu - z_gpu.cpu()).abs().max()),
        "decode_encode_exact": bool(torch.equal(back.cpu(), x)),
        "bpd_fp32": float(bpd.mean()),
        "bpd_bf16": float(bpd16.mean()),
        "bpd_finite": bool(torch.isfinite(bpd).all() and torch.isfinite(bpd16).all()),
        "sample_shape": list(s.shape),
        "sample_device": str(s.device),
    }
    print(json.dumps(row), flush=True)
    assert row["decode_encode_exact"] and row["bpd_finite"], row
    assert row["encode_max_abs_diff_cpu_gpu"] < 1e-2, row
EOF

echo "== 3. train / sample / evaluate on cuda, bf16"
RUN="$OUT/run"
rm -rf "$RUN"
$PY -m pairflow train --preset multiscale --conditional --set conditioning=mixture \
    --device cuda --precision bf16 --epochs 1 --max-steps 200 --batch-size 64 \
    --ema-decay 0.999 --test-pairs 1000 --data-dir "$DATA" --out "$RUN" --log-every 20 \
    --no-progress
$PY -m pairflow sample "$RUN" --device cuda --n 64 --temperature 0.7 --out "$OUT/samples.png"
$PY -m pairflow evaluate "$RUN" --device cuda --num-pairs 2000 --samples 2000 \
    --temperature 0.7 --data-dir "$DATA" --out "$OUT/eval"
$PY -m pairflow evaluate "$RUN" --device cuda --num-pairs 200 --importance-samples 8 \
    --data-dir "$DATA" --out "$OUT/eval"
$PY -m pairflow train --preset glow --device cuda --precision bf16 --epochs 1 --max-steps 50 \
    --batch-size 64 --test-pairs 500 --data-dir "$DATA" --out "$OUT/run-glow" --no-progress

echo "== 4. speed"
$PY - <<'EOF' | tee "$OUT/cuda_speed.jsonl"
import json, time, torch
from pairflow.flows import build_flow

x = torch.randint(0, 256, (256, 1, 28, 56), dtype=torch.uint8, device="cuda")
for preset, overrides in [("multiscale", {}), ("glow", {}), ("glow", {"coupling": "additive"}),
                          ("multiscale", {"dequantization": "variational"}),
                          ("seed", {})]:
    for precision in ("fp32", "bf16"):
        flow = build_flow(preset, precision=precision, **overrides).cuda()
        opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
        times = []
        for i in range(25):
            torch.cuda.synchronize()
            t = time.perf_counter()
            loss = flow.bits_per_dim(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(time.perf_counter() - t)
        step = sorted(times)[len(times) // 2]
        print(json.dumps({"preset": preset, "overrides": overrides, "precision": precision,
                          "batch": 256, "median_step_s": round(step, 5),
                          "pairs_per_s": round(256 / step, 1),
                          "device": torch.cuda.get_device_name(0)}), flush=True)
EOF
echo "== done: $OUT"
