# Issue 13's GPU measurements on the bundled SmolLM2 (bf16 params, cuDNN): the defaults sweep at 16K/32K, then the
# configuration its pick rule ranks first, checked at the target lengths. Needs the GGUF's two halves as
# /tmp/gguf.part0 and /tmp/gguf.part1 (carried in two calls: .carry/gguf_a, .carry/gguf_b) and .carry/data
# (InfiniteBench passkey zip, LongBench multi_news.jsonl and config/). SWEEP_S: the sweep's deadline in seconds.
. benchmarks/jobs/smollm2_checkpoint.sh
S="python3 benchmarks/sweep_defaults.py --ckpt $CKPT --dtype bfloat16 --multi-news $D/multi_news.jsonl
   --longbench-config $D/longbench/config --passkey-data $D/infinitebench_passkey_8k-64k_archive.zip"
$S --out $W/sweep --task passkey:16k,32k --task niah:16k,32k --task multi_news --samples 10 \
  --multi-news-samples 20 --deadline ${SWEEP_S:-600}
cp $W/sweep/sweep.json $W/sweep.json; cp $W/sweep/rows.jsonl $W/sweep_rows.jsonl
eval "$(python3 -c "
import json; r = json.load(open('$W/sweep.json'))['ranked'][0]
print(f\"C={r['chunk']} K={r['keep']} T={r['template']} H={'on' if r['chat'] else 'off'}\")")"
echo "pick: chunk $C keep $K template $T chat $H"
V="$S --out $W/validate --chunk-tokens $C --keep $K --templates $T --chat $H"
keep() { cp $W/validate/rows.jsonl $W/validate_rows.jsonl; }
$V --task passkey_ib --task passkey:128k --samples 20 --baselines truncate; keep
$V --task niah:8k,16k,32k,64k,128k --baselines truncate,full; keep
$V --task niah:32k --evict 0.5 --baselines ""; keep
$V --task multi_news --multi-news-samples 30 --baselines truncate; keep
$V --task passkey:1m --samples 10 --baselines ""; keep
