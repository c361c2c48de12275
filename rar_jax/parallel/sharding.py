"""Device mesh and the logical-axis -> mesh-axis rules (the one place they are defined).

Model parameters carry logical axis names (see rar_jax.models.decoder); `LOGICAL_AXIS_RULES` maps
each to a mesh axis of the ("data", "fsdp", "tensor") mesh made by `make_mesh`:

=========  ================  ==============================================
logical    mesh axis         why
=========  ================  ==============================================
batch      ("data", "fsdp")  activations split over every data-parallel device
embed      fsdp              parameters fully sharded along the model width
vocab      tensor            embedding / LM head split over vocabulary
heads      tensor            attention heads split (Megatron style)
kv_heads   tensor
mlp        tensor            MLP width split
head_dim   None
layers     None              the scanned axis stays whole on every device
=========  ================  ==============================================

A dimension whose size is not divisible by its mesh axis size is left unsharded (logged), e.g.
SmolLM2's 9 heads on a tensor axis of 2.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

LOGICAL_AXIS_RULES: Mapping[str, MeshAxes] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
}


def mesh_shape(data: int, fsdp: int, tensor: int, device_count: int) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) sizes for ``device_count`` devices, one -1 filled in.

    Raises:
        ValueError: naming the axis, when sizes are not positive, more than one is -1, or the sizes
            do not multiply to the number of devices.
    """
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    inferred = [name for name, size in sizes.items() if size == -1]
    if len(inferred) > 1:
        raise ValueError(f"only one mesh axis may be -1; got -1 for {inferred}")
    for name, size in sizes.items():
        if size != -1 and (not isinstance(size, (int, np.integer)) or size < 1):
            raise ValueError(f"mesh axis {name!r} must be a positive integer or -1, got {size!r}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if inferred:
        name = inferred[0]
        if device_count % known:
            raise ValueError(
                f"mesh axis {name!r} = -1 cannot be inferred: {device_count} devices are not "
                f"divisible by the product of the other axes ({known})"
            )
        sizes[name] = device_count // known
    elif known != device_count:
        bad = [name for name, size in sizes.items() if device_count % size] or list(MESH_AXES)
        raise ValueError(
            f"mesh axis {bad[0]!r}: data={data} x fsdp={fsdp} x tensor={tensor} = {known} does not "
            f"match the {device_count} devices; set one axis to -1 to use the remaining devices"
        )
    return tuple(sizes[name] for name in MESH_AXES)


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over all (or the given) devices.

    Args:
        data: size of the data-parallel axis.
        fsdp: size of the fully-sharded-data-parallel axis.
        tensor: size of the tensor-parallel axis.
        devices: devices to use; default `jax.devices()`.
        One size may be -1: it becomes the number of remaining devices (see `mesh_shape`).
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if devices == jax.devices():
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def logical_to_mesh_spec(
    logical_axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules: Mapping[str, MeshAxes] | None = None,
) -> PartitionSpec:
    """Translate logical axis names to a PartitionSpec.

    Args:
        logical_axes: one name (or None) per array dimension.
        shape: the array shape; with `mesh`, dimensions not divisible by their mesh axes' total size
            are left unsharded.
        mesh: the target mesh (needed for the divisibility check).
        rules: logical -> mesh axes; default LOGICAL_AXIS_RULES.

    Raises:
        ValueError: for a logical name missing from the rules.
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    spec: list[MeshAxes] = []
    used: set[str] = set()
    for dim, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise ValueError(f"logical axis {name!r} has no rule; known: {sorted(rules)}")
        target = rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        if mesh is not None:
            axes = tuple(axis for axis in axes if mesh.shape[axis] > 1)
        axes = tuple(axis for axis in axes if axis not in used)
        if axes and shape is not None and mesh is not None:
            total = math.prod(mesh.shape[axis] for axis in axes)
            if shape[dim] % total:
                logger.info(
                    "dimension %d (%s, size %d) is not divisible by mesh axes %s (%d); replicated",
                    dim, name, shape[dim], axes, total,
                )
                axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def param_shardings(
    state: Any, mesh: Mesh, rules: Mapping[str, MeshAxes] | None = None
) -> Any:
    """NamedShardings for every Variable of an NNX state (or module), from its logical axes.

    Any pytree holding Variables works, e.g. a train state whose optimiser moments mirror the
    parameters (optax keeps the Variable nodes and their metadata); plain array leaves (step
    counters, scalars of the optimiser state) are replicated.

    Args:
        state: an `nnx.State` (abstract or concrete), an `nnx.Module` or a pytree of them.
        mesh: the target mesh.
        rules: logical -> mesh axes; default LOGICAL_AXIS_RULES.

    Returns:
        The same tree with each Variable's value replaced by its NamedSharding (usable as jit
        in/out shardings or with `jax.device_put`). Variables without axis names are replicated.
    """
    if isinstance(state, nnx.Module):
        state = nnx.state(state)

    def sharding_of(variable: Any) -> Any:
        if not isinstance(variable, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        axes = variable.get_metadata().get("out_sharding")
        shape = variable.shape
        if not axes:
            return variable.replace(NamedSharding(mesh, PartitionSpec()))
        if len(axes) != len(shape):
            raise ValueError(
                f"parameter of shape {shape} has {len(axes)} logical axes {axes}; expected one per dim"
            )
        return variable.replace(NamedSharding(mesh, logical_to_mesh_spec(axes, shape, mesh, rules)))

    return jax.tree.map(sharding_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] activation: batch over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, logical_to_mesh_spec(("batch",) + (None,) * (ndim - 1), mesh=mesh))


def cache_shardings(cache: Any, mesh: Mesh, rules: Mapping[str, MeshAxes] | None = None) -> Any:
    """NamedShardings for a `rar_jax.models.cache.KVCache` (or its `jax.eval_shape`), same pytree.

    Each layer's keys/values [batch, kv_heads, slots, head_dim] shard batch over ("data", "fsdp")
    and kv_heads over "tensor" (dimensions that do not divide are replicated); key_mask and a
    per-row end_index shard their batch axis, a scalar end_index is replicated.
    """

    def named(axes: tuple[str | None, ...], shape: tuple[int, ...]) -> NamedSharding:
        return NamedSharding(mesh, logical_to_mesh_spec(axes, shape, mesh, rules))

    kv = lambda a: named(("batch", "kv_heads", None, "head_dim"), a.shape)  # noqa: E731
    end_axes = ("batch",) if len(cache.end_index.shape) else ()
    return type(cache)(
        keys=tuple(kv(a) for a in cache.keys),
        values=tuple(kv(a) for a in cache.values),
        key_mask=named(("batch", None), cache.key_mask.shape),
        end_index=named(end_axes, cache.end_index.shape),
    )
