"""Mesh construction and logical-axis partition rules."""

from rar_jax.parallel.sharding import (
    LOGICAL_AXIS_RULES,
    MESH_AXES,
    batch_sharding,
    cache_shardings,
    logical_to_mesh_spec,
    make_mesh,
    mesh_shape,
    param_shardings,
)

__all__ = [
    "LOGICAL_AXIS_RULES",
    "MESH_AXES",
    "batch_sharding",
    "cache_shardings",
    "logical_to_mesh_spec",
    "make_mesh",
    "mesh_shape",
    "param_shardings",
]
