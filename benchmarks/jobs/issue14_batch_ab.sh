# Issue 14 on one card with little device time: 8 documents of 32K tokens (SmolLM2 shape) in one batched call
# against 8 separate calls, then the single-question bench at 32K and 128K after and before (.carry/old, the package
# at 9834b01) the batch refactor, to show that the batch form costs a single question nothing.
python3 benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out $W/many_documents_smollm2.json
python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 300 --out $W/bench_new.json
(cd .carry/old && PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , --timeout 300 \
  --out $W/bench_old.json)
# The old side runs inside .carry/old: `python -m` puts the working directory first on sys.path, so PYTHONPATH
# alone would import this tree's package (it did, in the runs of 2026-12-02 and 2026-12-05).
