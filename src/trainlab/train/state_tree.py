"""Pickle-free state: nested Python trees of tensors as (tensors, JSON), and RNG states.

A checkpoint stores everything that is not model weights — optimizer state, counters,
schedule and sampler positions, metric history — as one tree: its tensors go to
safetensors under stable path keys, its structure to JSON with tagged nodes for what JSON
lacks (tensors, tuples, NaN/inf, int-keyed dicts). Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

_TAGS = ("__tensor__", "__tuple__", "__float__", "__dict__")
_SPECIAL_FLOATS = ("nan", "inf", "-inf")


class CheckpointError(ValueError):
    """A checkpoint, or a value to put in one, that trainlab cannot save or load safely."""


class _Invalid(Exception):
    """A problem found in a checkpoint directory; ``load_checkpoint`` adds where and the fix."""


# --- tensor trees <-> (tensors, JSON) -------------------------------------------------------


def flatten(tree: Any) -> tuple[dict[str, Tensor], Any]:
    """Split a tree into its tensors and a JSON-able skeleton that refers to them.

    The tree nests dicts, lists and tuples of tensors, ints, floats (inf and nan too),
    bools, None and strings. Each tensor is replaced by ``{"__tensor__": key}``, its key
    the path to it (``"state/0/exp_avg"``; ``~`` and ``/`` inside a dict key are escaped
    as ``~0`` and ``~1``, as in JSON Pointer). Tensors are saved as detached, contiguous
    CPU clones, so a view into a larger flat buffer costs only its own elements.

    Other tagged forms: ``{"__tuple__": [...]}``, ``{"__float__": "nan" | "inf" | "-inf"}``
    and ``{"__dict__": [[key, value], ...]}`` for dicts whose keys are not all strings (the
    int keys of an optimizer's ``state``) or start with ``"__"``. The skeleton survives
    ``json.dumps(..., allow_nan=False)``.

    Departures from an exact round trip: dict subclasses (``OrderedDict``) come back as
    dicts, named tuples as tuples, tensors on the CPU and without ``requires_grad``.
    """
    tensors: dict[str, Tensor] = {}
    return tensors, _encode(tree, (), tensors)


def unflatten(tensors: dict[str, Tensor], json_tree: Any) -> Any:
    """Rebuild the tree `flatten` split; every tensor must be referred to exactly once."""
    used: set[str] = set()
    tree = _decode(json_tree, tensors, used)
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(
            f"Invalid tensor tree: tensors {unused} are not referred to by the JSON tree "
            "(the two halves come from different saves)"
        )
    return tree


def _encode(value: Any, path: tuple[str, ...], tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, Tensor):
        key = "/".join(path)
        if key in tensors:
            raise CheckpointError(
                f"Invalid tensor tree: two tensors at path {key!r} (rename a key)"
            )
        tensors[key] = _compact_copy(value, key)
        return {"__tensor__": key}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"__float__": repr(float(value))}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, (*path, str(i)), tensors) for i, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return _encode_dict(value, path, tensors)
    raise CheckpointError(
        f"Invalid value at {'/'.join(path) or 'the root'!r}: a {type(value).__name__} "
        "(must be a tensor, int, float, bool, None, str, or a dict, list or tuple of them; "
        "convert numpy values with int(), float() or torch.from_numpy())"
    )


def _encode_dict(value: dict, path: tuple[str, ...], tensors: dict[str, Tensor]) -> Any:
    def child(key: Any) -> tuple[str, ...]:
        return (*path, str(key).replace("~", "~0").replace("/", "~1"))

    if all(isinstance(k, str) and not k.startswith("__") for k in value):
        return {k: _encode(v, child(k), tensors) for k, v in value.items()}
    pairs = []
    for k, v in value.items():
        if k is not None and not isinstance(k, (str, int, float)):
            raise CheckpointError(
                f"Invalid dict key at {'/'.join(path) or 'the root'!r}: {k!r} "
                "(must be a str, int, float, bool or None)"
            )
        pairs.append([_encode(k, path, tensors), _encode(v, child(k), tensors)])
    return {"__dict__": pairs}


def _compact_copy(tensor: Tensor, key: str) -> Tensor:
    """A detached, contiguous CPU copy owning just its elements (never a shared storage)."""
    if tensor.layout != torch.strided:
        raise CheckpointError(
            f"Invalid tensor at {key!r}: layout {tensor.layout} (must be dense; use .to_dense())"
        )
    copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
    return copy.copy_(tensor.detach())  # one copy, also from another device


def _decode(node: Any, tensors: dict[str, Tensor], used: set[str]) -> Any:
    if isinstance(node, list):
        return [_decode(item, tensors, used) for item in node]
    if not isinstance(node, dict):
        return node
    tag = next(iter(node), None) if len(node) == 1 else None
    if tag not in _TAGS:
        if any(k.startswith("__") for k in node):
            raise CheckpointError(f"Invalid tensor tree: unknown tag in {sorted(node)}")
        return {k: _decode(v, tensors, used) for k, v in node.items()}
    body = node[tag]
    if tag == "__tensor__":
        if body not in tensors:
            raise CheckpointError(f"Invalid tensor tree: no tensor {body!r} for the JSON tree")
        used.add(body)
        return tensors[body]
    if tag == "__tuple__":
        return tuple(_decode(item, tensors, used) for item in body)
    if tag == "__float__":
        if body not in _SPECIAL_FLOATS:
            raise CheckpointError(f"Invalid tensor tree: special float {body!r}")
        return float(body)
    return {_decode(k, tensors, used): _decode(v, tensors, used) for k, v in body}


# --- random number generators ----------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The state of every global RNG a training run draws from, as a tree `flatten` takes.

    ``torch``: the CPU generator (a uint8 tensor); ``numpy``: the legacy global generator
    (``np.random.get_state()``, its 624 keys as an int64 tensor); ``python``: ``random``'s
    state (a tuple of ints); ``cuda``: one tensor per device, only when CUDA is available.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured, so that the next draws repeat.

    The CUDA states are restored only when as many CUDA devices are available as were
    saved (a GPU run resumed on the CPU cannot repeat its GPU draws anyway).
    """
    try:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            (n["bit_generator"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CheckpointError(
            f"Invalid RNG state: {error!r} (must be what rng_state() returned)"
        ) from error
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
