# Issue 12 on one card, one job (run with gpu_job_bg.sh, carrying .carry/smollm2_tokenizer and .whl): the canonical
# table with the official schedule at 32K/128K/1M, HF dense at 128K, SmolLM2 on text at 128K, then the matmul
# probe (cuBLAS against XLA), the score-kernel probe after the kernel registry, and the batch of 8 documents.
python3 -m pcomp_jax.bench --lengths 32k,128k,1m --baselines official --timeout 500 --out $W/bench_llama3_8b.json
python3 -m pcomp_jax.bench --lengths 128k --baselines hf --timeout 300 --out $W/bench_llama3_8b_hf.json
python3 -m pcomp_jax.bench --model smollm2 --tokenizer .carry/smollm2_tokenizer --chunk-tokens 2048 \
  --lengths 128k --baselines official --timeout 300 --out $W/bench_smollm2_text.json
python3 benchmarks/matmul_probe.py --sustain-s 2 --out $W/matmul_probe.json
python3 benchmarks/score_kernel_probe.py > $W/score_kernel_probe.txt 2>&1; cat $W/score_kernel_probe.txt
python3 benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out $W/many_documents_smollm2.json
