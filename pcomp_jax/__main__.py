import sys

from pcomp_jax.cli import main

sys.exit(main())
