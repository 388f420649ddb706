# Issue 13, second GPU job on the bundled SmolLM2 (bf16 params, cuDNN): the chosen defaults (512-token chunks, keep 2,
# template qa, chat on) at the target lengths, the 50%-eviction NIAH check, passkey on documents that fit the window,
# then more sweep cells at 16K/32K. Needs the GGUF's halves as /tmp/gguf.part0 and /tmp/gguf.part1 and .carry/data.
. benchmarks/jobs/smollm2_checkpoint.sh
S="python3 benchmarks/sweep_defaults.py --ckpt $CKPT --dtype bfloat16 --multi-news $D/multi_news.jsonl
   --longbench-config $D/longbench/config --passkey-data $D/infinitebench_passkey_8k-64k_archive.zip"
V="$S --out $W/validate --chunk-tokens 512 --keep 2 --templates qa --chat on --baselines ,"
keep() { cp $W/validate/rows.jsonl $W/validate_rows.jsonl; cp $W/sweep/rows.jsonl $W/sweep_rows.jsonl; }
$V --task passkey_ib --samples 20; keep
$V --task niah:8k,16k,32k,64k,128k; keep
$V --task passkey:128k --samples 20; keep
$V --task niah:8k --baselines truncate,full; keep
$V --task niah:32k --evict 0.5; keep
$V --task passkey:1m --samples 10; keep
$V --task passkey:4k,6k --samples 10 --baselines full; keep
G="$S --out $W/sweep --task passkey:16k,32k --task niah:16k,32k --samples 10 --templates qa --baselines ,"
$G --chunk-tokens 512 --keep 3 --chat on; keep
$G --chunk-tokens 1024 --keep 1,2 --chat on; keep
$G --chunk-tokens 2048 --keep 3 --chat on; keep
$G --chunk-tokens 512 --keep 2 --chat off; keep
$G --chunk-tokens 1024 --keep 2 --templates retrieval --chat on; keep
