# Issue 12: the matmul rate on this card, PyTorch (cuBLAS) against JAX (XLA) under several XLA_FLAGS, burst and
# sustained (benchmarks/matmul_probe.py); then the canonical bench at 32K and 128K with the default flags, and again
# with the variant whose sustained rate on the model's products is highest if that is not the default.
python3 benchmarks/matmul_probe.py --out $W/matmul_probe.json
BEST=$(python3 - <<'PY'
import json, os
r = json.load(open(os.environ["W"] + "/matmul_probe.json"))
shapes = ("qkv", "o", "gate_up", "down")
def rate(v):
    return sum(v[s]["sustained_tflops"] for s in shapes) / len(shapes)
jax = {k: v for k, v in r.items() if k.startswith("xla-") and "error" not in v}
best = max(jax, key=lambda k: rate(jax[k]))
print(jax[best]["xla_flags"] or "" if rate(jax[best]) > 1.02 * rate(jax["xla-default"]) else "")
PY
)
echo "best flags: '$BEST'"
python3 -m pcomp_jax.bench --lengths 32k,128k --baselines official --timeout 400 --out $W/bench_default.json
if [ -n "$BEST" ]; then
  XLA_FLAGS="$BEST" python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 400 --out $W/bench_best.json
fi
