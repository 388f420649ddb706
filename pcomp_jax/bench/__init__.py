"""`python -m pcomp_jax.bench`: ParallelComp's speed beside dense prefill and the peers, in one run, on any card.

- `shapes.py`: named model shapes (random bf16 weights made on the device) and FLOP / byte arithmetic.
- `worker.py`: one measurement (one method at one length) in its own process, printed as one JSON line.
- `peers.py`: the PyTorch peers: HF transformers dense prefill, and the official code's schedule re-done in HF.
- `cli.py`: runs the workers, derives the columns, prints the table, writes JSON and the plot.
"""
