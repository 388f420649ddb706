"""`python -m convert.hf_to_flax SRC --out DIR` from a checkout; the same as `python -m pcomp_jax.convert`."""

import sys

from pcomp_jax.convert.hf_to_flax import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m convert.hf_to_flax"))
