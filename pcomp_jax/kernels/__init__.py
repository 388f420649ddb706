"""Attention kernels behind one contract (`contract.py`: shapes, outputs and the plain-jnp `reference`).

- `triton`: Pallas kernels with the Triton lowering (the chunk attention with importance scores, and the score
  kernel alone that runs beside cuDNN's attention); interpret mode runs them on a CPU.
- Mosaic GPU: not written yet (docs/KERNELS.md says why Triton came first).

The kernels import Pallas, so `pcomp_jax.attention` imports them only when a backend picks them.
"""

from pcomp_jax.kernels.contract import AttentionOutput, reference

__all__ = ["AttentionOutput", "reference"]
