"""The repository's converter entry point, `python -m convert.hf_to_flax`, for use from a checkout.

The code lives in `pcomp_jax.convert` (installed with the package: `python -m pcomp_jax.convert` or the
`pcomp-jax-convert` command); this folder only forwards to it and is not part of the installed wheel.
"""

from pcomp_jax.convert import ConversionError, convert  # noqa: F401
