"""pcomp-jax: ParallelComp long-context inference for Llama-family models in JAX/Flax."""

from pcomp_jax.cache import KVCache
from pcomp_jax.checkpoint import CheckpointError, save_checkpoint
from pcomp_jax.config import ConfigError, LlamaConfig, RopeScaling, from_hf_config
from pcomp_jax.decoding import Sampling, decode, generate_ids
from pcomp_jax.errors import InputError
from pcomp_jax.layout import to_runtime, to_stored
from pcomp_jax.model import Output, forward, init_params
from pcomp_jax.parallelcomp.config import (
    Calibration,
    ParallelCompConfig,
    PipelineConfigError,
    TokenEviction,
    compat,
)
from pcomp_jax.parallelcomp.pipeline import METHODS, Result, generate, generate_from_ids
from pcomp_jax.parallelcomp.prompts import TEMPLATES, PromptTemplate
from pcomp_jax.parallelcomp.staged import (
    Document,
    answer,
    answer_ids,
    generate_many,
    prefill_document,
    prefill_document_ids,
)
from pcomp_jax.pretrained import Completion, Model, load

__all__ = [
    "METHODS",
    "TEMPLATES",
    "Calibration",
    "InputError",
    "ParallelCompConfig",
    "PipelineConfigError",
    "PromptTemplate",
    "Result",
    "TokenEviction",
    "compat",
    "generate",
    "generate_from_ids",
    "Document",
    "answer",
    "answer_ids",
    "generate_many",
    "prefill_document",
    "prefill_document_ids",
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
    "to_runtime",
    "to_stored",
]
