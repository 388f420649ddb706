# Issue 14's measurements: many questions about one document (8B shape at 128K, SmolLM2 shape at 128K), then the
# single-question bench at 128K for the no-regression check.
python3 benchmarks/many_questions.py --model llama3-8b --length 131072 --questions 10 --out $W/many_llama3_8b_128k.json
python3 benchmarks/many_questions.py --model smollm2 --length 131072 --questions 10 --chunk-tokens 2048 \
  --out $W/many_smollm2_128k.json
python3 -m pcomp_jax.bench --lengths 128k --baselines , --timeout 300 --out $W/bench_128k_single.json
