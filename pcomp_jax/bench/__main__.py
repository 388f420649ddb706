import sys

from pcomp_jax.bench.cli import main

sys.exit(main())
