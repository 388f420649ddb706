"""pcomp-jax: ParallelComp long-context inference for Llama-family models in JAX/Flax."""

from pcomp_jax.cache import KVCache
from pcomp_jax.checkpoint import CheckpointError, save_checkpoint
from pcomp_jax.config import ConfigError, LlamaConfig, RopeScaling, from_hf_config
from pcomp_jax.generate import Sampling, decode, generate_ids
from pcomp_jax.model import Output, forward, init_params
from pcomp_jax.pretrained import Completion, Model, load

__all__ = [
    "CheckpointError",
    "Completion",
    "ConfigError",
    "KVCache",
    "LlamaConfig",
    "Model",
    "Output",
    "RopeScaling",
    "Sampling",
    "decode",
    "forward",
    "from_hf_config",
    "generate_ids",
    "init_params",
    "load",
    "save_checkpoint",
]
