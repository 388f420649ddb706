"""`python -m pcomp_jax.convert SRC --out DIR`: see `pcomp_jax.convert.hf_to_flax`."""

import sys

from pcomp_jax.convert.hf_to_flax import main

sys.exit(main())
