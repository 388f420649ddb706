"""`python -m pcomp_jax.eval`: tasks, metrics, methods and reports for reproducible long-context evaluation."""
