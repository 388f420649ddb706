"""HF tensor names -> our param tree (`pcomp_jax/model.py`), and the builder that fills it one tensor at a time.

HF stores Linear weights as [out, in]; our Dense kernels are [in, out], so those are transposed. Per-layer tensors go
into stacked [L, ...] arrays (the layer scan's leading axis), preallocated once in the target dtype, so the
converter never holds the source model twice: at most one source tensor is in memory besides the output.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

import jax
import numpy as np

from pcomp_jax.config import LlamaConfig
from pcomp_jax.convert.errors import ConversionError
from pcomp_jax.layout import stored_shapes

Path_ = tuple[str, ...]  # a param's path in the tree, e.g. ("layers", "attn", "q_proj", "kernel")

# HF names that carry no weights we need (precomputed RoPE buffers some old checkpoints saved).
IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")

EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"

_GLOBAL = {
    EMBED: (("embed", "embedding"), False),
    "model.norm.weight": (("final_norm", "scale"), False),
    LM_HEAD: (("lm_head", "kernel"), True),
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_PER_LAYER = {  # suffix after "model.layers.{i}." -> (path under "layers", transpose)
    **{f"self_attn.{p}_proj.weight": (("attn", f"{p}_proj", "kernel"), True) for p in "qkvo"},
    **{f"self_attn.{p}_proj.bias": (("attn", f"{p}_proj", "bias"), False) for p in "qkvo"},
    **{f"mlp.{p}_proj.weight": (("mlp", f"{p}_proj", "kernel"), True) for p in ("gate", "up", "down")},
    "input_layernorm.weight": (("attn_norm", "scale"), False),
    "post_attention_layernorm.weight": (("mlp_norm", "scale"), False),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one HF tensor goes: param `path`, slot `layer` of its stacked axis (None if unstacked), transposed?"""

    path: Path_
    layer: int | None
    transpose: bool

    def __str__(self):
        s = "/".join(self.path)
        return s if self.layer is None else f"{s}[{self.layer}]"


def hf_target(name: str) -> Target | None:
    """The param slot for HF tensor `name`, or None if the name is not one we know."""
    if name in _GLOBAL:
        path, transpose = _GLOBAL[name]
        return Target(path, None, transpose)
    m = _LAYER_RE.fullmatch(name)
    if m and m.group(2) in _PER_LAYER:
        path, transpose = _PER_LAYER[m.group(2)]
        return Target(("layers", *path), int(m.group(1)), transpose)
    return None


def expected_shapes(config: LlamaConfig) -> dict[Path_, tuple[int, ...]]:
    """Shape of every param of `config` in the stored layout (layout.py)."""
    flat = jax.tree_util.tree_flatten_with_path(stored_shapes(config), is_leaf=lambda x: isinstance(x, tuple))[0]
    return {tuple(k.key for k in keys): tuple(leaf) for keys, leaf in flat}


def _fmt(problems: list[str], limit: int = 20) -> str:
    more = [f"... and {len(problems) - limit} more"] if len(problems) > limit else []
    return "\n  ".join(["", *problems[:limit], *more])


class ParamBuilder:
    """Checks a source's tensor names and shapes against `config`, then fills the param tree tensor by tensor.

    Usage: `b = ParamBuilder(config, dtype); b.check(specs); for name, a in tensors: b.add(name, a); b.finish()`.
    """

    def __init__(self, config: LlamaConfig, dtype: np.dtype):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.shapes = expected_shapes(config)
        self._arrays: dict[Path_, np.ndarray] = {}
        self._filled: set[tuple[Path_, int | None]] = set()
        self._tied_head: np.ndarray | None = None  # lm_head.weight seen before the embedding (tied models only)

    def _slot_shape(self, target: Target) -> tuple[int, ...] | None:
        """Expected shape of one source tensor for `target`, in HF layout; None if the slot does not exist."""
        shape = self.shapes.get(target.path)
        if shape is None:
            return None
        if target.layer is not None:
            if target.layer >= shape[0]:
                return None
            shape = shape[1:]
        return tuple(reversed(shape)) if target.transpose else shape

    def _target(self, name: str) -> Target | None:
        if name == LM_HEAD and self.config.tie_word_embeddings:
            # A tied model has no lm_head param; a stored copy must equal the embedding (checked in add()).
            return Target(("embed", "embedding"), None, False)
        return hf_target(name)

    def _slots(self) -> set[tuple[Path_, int | None]]:
        return {(p, i) for p, s in self.shapes.items() for i in (range(s[0]) if p[0] == "layers" else [None])}

    def check(self, specs: Mapping[str, tuple[int, ...]]) -> None:
        """Raise ConversionError listing every unused source tensor, wrong shape and missing param in `specs`."""
        unused, wrong, covered = [], [], set()
        for name, shape in specs.items():
            if IGNORED.search(name):
                continue
            target = self._target(name)
            want = None if target is None else self._slot_shape(target)
            if want is None:
                why = "" if target is None else f" (no param {target} in this config)"
                unused.append(f"{name}{why}")
            elif tuple(shape) != want:
                wrong.append(f"{name}: expected shape {list(want)} (for {target}), got {list(shape)}")
            elif not (name == LM_HEAD and self.config.tie_word_embeddings):  # a tied copy does not stand in for it
                covered.add((target.path, target.layer))
        missing = ["/".join(p) + ("" if i is None else f"[{i}]") for p, i in sorted(self._slots() - covered, key=str)]
        problems = [f"unused source tensor {u}" for u in unused] + [f"wrong shape: {w}" for w in wrong]
        problems += [f"missing param {m}" for m in missing]
        if problems:
            raise ConversionError(f"the source does not match the model config:{_fmt(problems)}")

    def add(self, name: str, array: np.ndarray) -> None:
        """Copy source tensor `name` (HF layout) into its slot, casting to the target dtype."""
        if IGNORED.search(name):
            return
        target = self._target(name)
        want = None if target is None else self._slot_shape(target)
        if want is None:
            raise ConversionError(f"unused source tensor {name}")
        if tuple(array.shape) != want:
            raise ConversionError(f"wrong shape: {name}: expected {list(want)} (for {target}), got {list(array.shape)}")
        if name == LM_HEAD and self.config.tie_word_embeddings:
            self._tied_head = array.astype(self.dtype)
            self._check_tied_head()
            return
        if target.path not in self._arrays:
            self._arrays[target.path] = np.empty(self.shapes[target.path], self.dtype)
        dest = self._arrays[target.path]
        if target.layer is not None:
            dest = dest[target.layer]
        np.copyto(dest, array.T if target.transpose else array, casting="unsafe")
        self._filled.add((target.path, target.layer))
        if target.path == ("embed", "embedding"):
            self._check_tied_head()

    def _check_tied_head(self) -> None:
        embed = self._arrays.get(("embed", "embedding"))
        if self._tied_head is None or embed is None:
            return
        if not np.array_equal(self._tied_head, embed):
            raise ConversionError(
                f"the config ties word embeddings (tie_word_embeddings=true) but {LM_HEAD} differs from {EMBED}; "
                "the model would compute different logits than the checkpoint"
            )
        self._tied_head = None

    def finish(self) -> dict:
        """The filled param tree (nested dict of numpy arrays); raises if any slot was never filled."""
        missing = self._slots() - self._filled
        if missing:
            names = sorted("/".join(p) + ("" if i is None else f"[{i}]") for p, i in missing)
            raise ConversionError(f"the source did not provide these params:{_fmt(names)}")
        tree: dict = {}
        for path, array in self._arrays.items():
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = array
        return tree


def params_from_state_dict(
    tensors: Mapping[str, np.ndarray], config: LlamaConfig, dtype: np.dtype = np.float32
) -> dict:
    """Our param tree from an in-memory HF state dict {name: [out, in] numpy array} (tests, notebooks)."""
    builder = ParamBuilder(config, dtype)
    builder.check({name: a.shape for name, a in tensors.items()})
    return collect(builder, tensors.items())


def collect(builder: ParamBuilder, tensors: Iterable[tuple[str, np.ndarray]]) -> dict:
    """Feed every (name, array) into `builder` and return the finished tree."""
    for name, array in tensors:
        builder.add(name, array)
    return builder.finish()
