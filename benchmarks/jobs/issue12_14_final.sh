# Issues 12 and 14, the measurements still missing (run with gpu_job_bg.sh, carrying .carry/old = the package at
# c5681e5, before decode_in_place, and .carry/old14 = the package at 997cfc9, before the staged engine and the batch
# refactor; the old sides run from inside their folder, since `python -m` puts the working directory first).
# 1. the canonical table at 32K and 128K with the official schedule (this tree); 2. the single question before the
# issue-14 work; 3. the batch of 8 documents; 4. the single question before decode_in_place; 5. the decode step,
# this tree and the commit before; 6. SmolLM2 on real text, host share; 7. the matmul probe (longest, last).
python3 -m pcomp_jax.bench --lengths 32k,128k --baselines official --timeout 400 --out $W/bench_new.json
(cd .carry/old14 && PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , \
  --timeout 300 --out $W/bench_before_issue14.json)
python3 benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out $W/many_documents_smollm2.json
(cd .carry/old && PYTHONPATH=$PWD:/tmp/site python3 -m pcomp_jax.bench --lengths 32k,128k --baselines , \
  --timeout 300 --out $W/bench_before_decode_in_place.json)
bash benchmarks/jobs/issue12_rest.sh  # 5-7: the decode steps, SmolLM2 on text, the matmul probe
