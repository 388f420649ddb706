import sys

from pcomp_jax.eval.cli import main

sys.exit(main())
