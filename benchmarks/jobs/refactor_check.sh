# After the kernel registry (attention.Kernel) and the batch refactor, on one card: the score-kernel probe (which
# kernels each backend picks; eviction with the score kernel against the jnp pass), then the batch of 8 documents.
python3 benchmarks/score_kernel_probe.py > $W/score_kernel_probe.txt 2>&1; cat $W/score_kernel_probe.txt
python3 benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out $W/many_documents_smollm2.json
