"""Logical-axis rules and mesh argument checks on one device (multi-device: test_multidevice.py)."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from rar_jax.parallel import LOGICAL_AXIS_RULES, logical_to_mesh_spec, make_mesh


def test_rules_map_logical_axes_to_mesh_axes():
    assert logical_to_mesh_spec(("layers", "embed", "heads", "head_dim")) == P(None, "fsdp", "tensor", None)
    assert logical_to_mesh_spec(("vocab", "embed")) == P("tensor", "fsdp")
    assert logical_to_mesh_spec(("layers", "mlp", "embed")) == P(None, "tensor", "fsdp")
    assert logical_to_mesh_spec(("batch", None)) == P(("data", "fsdp"), None)
    assert logical_to_mesh_spec(("kv_heads",)) == P("tensor")


def test_custom_rules_and_unknown_axis():
    rules = dict(LOGICAL_AXIS_RULES, embed=None, mlp=("fsdp", "tensor"))
    assert logical_to_mesh_spec(("embed", "mlp"), rules=rules) == P(None, ("fsdp", "tensor"))
    with pytest.raises(ValueError, match="'experts'"):
        logical_to_mesh_spec(("experts",))


def test_a_mesh_axis_is_used_once_per_array():
    # Both dims ask for "tensor"; only the first gets it.
    assert logical_to_mesh_spec(("heads", "mlp")) == P("tensor", None)


def test_single_device_mesh():
    mesh = make_mesh()
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize(
    "sizes, axis",
    [((2, 1, 1), "'data'"), ((1, 1, 4), "'tensor'"), ((-1, 2, 1), "'data'"), ((0, 1, 1), "'data'")],
)
def test_mesh_errors_name_the_axis(sizes, axis):
    with pytest.raises(ValueError, match=axis):
        make_mesh(*sizes)
