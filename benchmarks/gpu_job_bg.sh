#!/usr/bin/env bash
# Run the job file JOB (a bash script writing its results to $W) as one background job on the device machine, so
# that it may outlast one device call. Call `bash benchmarks/gpu_job_bg.sh JOB` back to back while the machine is
# warm: the first call starts it, each call waits up to ~9.3 minutes, and every call copies the log and the JSON so
# far to $OUT (set WAIT=N to return after N*10 s, e.g. when little device time is left). Wheels in .whl (carried) are installed first: that machine has no package index.
set -u
JOB=$1
export W=/tmp/pcomp_job_$(basename "$JOB" .sh) PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
if [ ! -e $W/started ]; then
  mkdir -p $W && touch $W/started
  [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  setsid nohup bash -c "bash $JOB; touch $W/done" > $W/log.txt 2>&1 < /dev/null &
fi
for _ in $(seq 1 ${WAIT:-56}); do [ -e $W/done ] && break; sleep 10; done  # WAIT: tens of seconds
cp $W/log.txt $W/*.json $W/*.jsonl "$OUT/" 2>/dev/null
[ -e $W/done ] && echo "JOB DONE" || echo "JOB RUNNING"
grep -v -i warn $W/log.txt | grep -v "^bench:" | tail -n 40
