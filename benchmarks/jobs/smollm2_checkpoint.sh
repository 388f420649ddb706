# Sourced by the SmolLM2 jobs (`. benchmarks/jobs/smollm2_checkpoint.sh`): joins the GGUF's halves, carried in two
# calls as /tmp/gguf.part0 and /tmp/gguf.part1 (.carry/gguf_a, .carry/gguf_b), checks its sha256
# (FIELD_NOTES), converts it once to $CKPT, and names the carried data directory $D. Stops the job on a bad file.
D=$PWD/.carry/data CKPT=/tmp/smollm2
cat /tmp/gguf.part0 /tmp/gguf.part1 > /tmp/smollm2.gguf
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smollm2.gguf" | sha256sum -c || exit 1
[ -e $CKPT/config.json ] || python3 -m convert.hf_to_flax /tmp/smollm2.gguf --out $CKPT || exit 1
