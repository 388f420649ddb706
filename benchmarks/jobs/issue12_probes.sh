# Issue 12, what bounds the prefill and the decode on one card (run with gpu_job_bg.sh, carrying .carry/old: the
# package of the commit before, for the A/B): the matmul probe (PyTorch/cuBLAS against XLA under three flag sets),
# the decode step (this tree with its kernels traced, the commit before timed), the canonical table at 32K and 128K
# against the official schedule.
OLD=$PWD/.carry/old:/tmp/site
python3 benchmarks/matmul_probe.py --sustain-s 2 --out $W/matmul_probe.json
python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 --variants library,weights-split --trace \
  --out $W/decode_probe.json
PYTHONPATH=$OLD python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 --variants library \
  --out $W/decode_probe_old.json
python3 -m pcomp_jax.bench --lengths 32k,128k --baselines official --timeout 400 --out $W/bench_new.json
# with device time left over: the decode step with XLA's Triton gemms off, and the commit before's table
# XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 \
#   --variants library --trace --out $W/decode_probe_no_triton.json
# (cd .carry/old && PYTHONPATH=$OLD python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 400 \
#   --out $W/bench_old.json)
