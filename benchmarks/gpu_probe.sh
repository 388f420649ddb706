#!/usr/bin/env bash
# Issue 12's decode probe on the device: one-token-step variants with and without XLA's dynamic-slice fusion.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/hlo
timeout 330 python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 --hlo-dir /tmp/hlo \
  --variants weights-scan,weights-unrolled,weights-split,weights-scan-reduce,step-unrolled-einsum,step-unrolled-reduce,step-split-einsum,step-split-reduce,library \
  --out $OUT/decode_probe.json 2>&1 | grep -v -i warn
tar czf $OUT/hlo.tgz -C /tmp hlo
XLA_FLAGS=--xla_gpu_enable_dynamic_slice_fusion=true timeout 150 python3 benchmarks/decode_probe.py --model llama3-8b \
  --cache 23040 --variants weights-scan,step-scan-einsum,library --out $OUT/decode_probe_dsf.json 2>&1 | grep -v -i warn
