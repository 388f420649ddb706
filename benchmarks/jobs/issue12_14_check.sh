# Issues 12 and 14, one card, one job (run with gpu_job_bg.sh, carrying .carry: .carry/old holds the package of the
# commit before the batch refactor, copied as gpu_ab_bg.sh says):
# 1. 8 documents of 32K tokens, SmolLM2 shape: one batched call against 8 separate calls;
# 2. the matmul rate, PyTorch (cuBLAS) against JAX (XLA) under several XLA_FLAGS, burst and sustained;
# 3. the single-question bench at 32K and 128K after (the official schedule beside it) and before (.carry/old) the
#    batch refactor;
# 4. again with the XLA flags whose sustained rate on the model's products is highest, if not the default's.
python3 benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out $W/many_documents_smollm2.json
python3 benchmarks/matmul_probe.py --sustain-s 2 --out $W/matmul_probe.json
python3 -m pcomp_jax.bench --lengths 32k,128k --baselines official --timeout 400 --out $W/bench_new.json
(cd .carry/old && PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 300 \
  --out $W/bench_old.json)
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
if [ -n "$BEST" ]; then
  XLA_FLAGS="$BEST" python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 400 --out $W/bench_flags.json
fi
# The old side runs inside .carry/old: `python -m` puts the working directory first on sys.path, so PYTHONPATH
# alone would import this tree's package (it did, in the runs of 2026-12-02 and 2026-12-05).
