#!/usr/bin/env bash
# Run the canonical and SmolLM2 benchmark tables as ONE background job on the device machine, so that a table
# longer than one device call (10 minutes) still comes from one run on one card. Call this script repeatedly
# (back to back, while the machine is warm): the first call starts the job, each call waits up to ~9.5 minutes,
# and the call that sees the job done copies the JSON, the plots and the log to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
W=/tmp/pcomp_bench
if [ ! -e $W/started ]; then
  mkdir -p $W && touch $W/started
  setsid nohup bash -c "
    python3 -m pcomp_jax.bench --lengths 8k,32k,128k,256k,1m --timeout 500 --out $W/bench_llama3_8b_h200.json
    python3 -m pcomp_jax.bench --model smollm2 --chunk-tokens 2048 --lengths 8k,32k,128k,256k --timeout 300 \
      --out $W/bench_smollm2_h200.json
    touch $W/done" > $W/log.txt 2>&1 < /dev/null &
fi
for _ in $(seq 1 56); do [ -e $W/done ] && break; sleep 10; done
cp $W/log.txt "$OUT/"
if [ -e $W/done ]; then cp $W/*.json $W/*.png "$OUT/"; echo "JOB DONE"; else echo "JOB RUNNING"; fi
tail -n 45 $W/log.txt
