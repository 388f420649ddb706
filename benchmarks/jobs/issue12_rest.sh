# The last steps of issue12_14_final.sh, for a fresh machine after the first ones have run (carrying .carry/old,
# .carry/smollm2_tokenizer and .whl): the decode step, this tree and c5681e5; SmolLM2 on real text; the matmul probe.
python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 --variants library --out $W/decode_probe.json
PYTHONPATH=$PWD/.carry/old:/tmp/site python3 benchmarks/decode_probe.py --model llama3-8b --cache 23040 \
  --variants library --out $W/decode_probe_old.json  # a script: its own folder first on sys.path, then PYTHONPATH
python3 -m pcomp_jax.bench --model smollm2 --tokenizer .carry/smollm2_tokenizer --chunk-tokens 2048 --lengths 128k \
  --baselines official --timeout 300 --out $W/bench_smollm2_text.json
python3 benchmarks/matmul_probe.py --sustain-s 2 --out $W/matmul_probe.json
