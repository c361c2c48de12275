"""Plans a config for a pod before it is rented (``rar-compile``): compiles every program a step
runs for a TPU topology on this CPU host, and prints per-chip memory, FLOPs, a roofline step time
and whether it fits.

    rar-compile --config=configs/paper/medicine_rar_implicit.py --topology=v5p:2x2x2
    rar-compile --config=configs/paper/medicine_rar_implicit.py --topology=h100:8   # estimate
    rar-compile --config=configs/paper/medicine_rar_implicit.py --search=v5p
    rar-compile --config=configs/paper/table1_expert_sft.py --job=sft --topology=v5e:2x4

Needs libtpu (``pip install 'jax[tpu]'`` at the project's jax version; in the test extras). No
weights are read: models are built from their ``config.json`` shapes (``rar_jax.aot.model_shapes``
knows the paper's Qwen2.5 models and Llama-3-8B). Change the mesh with
``--mesh=data,fsdp,tensor`` and any other setting with ``--config.<key>=...`` overrides.
``--search=<chip>`` tries the settings that trade speed for memory (micro-batch rows, rollout
chunk, remat, bf16 parameters, fsdp / tensor split) on that chip's topologies, smallest first,
and prints the first plan that fits. ``--output`` writes the
plans as JSON. The programs, the chip table and the estimate are described in ``rar_jax.aot``.
"""

from __future__ import annotations

import logging
import pathlib

from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.aot import plan as plan_lib
from rar_jax.aot.plan import SEARCH_TOPOLOGIES
from rar_jax.aot.programs import device_count
from rar_jax.io import write_json

_CONFIG = rar_config.define_config_flag()
_TOPOLOGY = flags.DEFINE_list("topology", [], "TPU topologies (v5p:2x2x2, v5e:4x4 ...) or GPU "
                              "nodes (h100:8, h200:8; estimated) to compile for.")
_SEARCH = flags.DEFINE_enum("search", None, sorted(SEARCH_TOPOLOGIES),
                            "Find the smallest topology of this TPU generation that fits.")
_JOB = flags.DEFINE_enum("job", "train", ["train", "sft"],
                         "The run to plan: rar-train (GRPO) or rar-sft.")
_MESH = flags.DEFINE_list("mesh", [], "data,fsdp,tensor sizes of the policy's mesh (-1 = the "
                          "remaining chips), overriding config.mesh.*; e.g. --mesh=1,-1,4.")
_MAX_COMPILES = flags.DEFINE_integer("max_compiles", 8, "Most compiles --search may spend.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the plans as JSON here.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _TOPOLOGY.value and not _SEARCH.value:
        raise app.UsageError("give --topology=<name>[,<name>...] or --search=<chip>")
    config = _CONFIG.value
    if _MESH.value:
        if len(_MESH.value) != 3:
            raise app.UsageError(f"--mesh={','.join(_MESH.value)}: expected data,fsdp,tensor")
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = map(int, _MESH.value)
    name = pathlib.Path(flags.FLAGS["config"].config_filename).stem
    sft = _JOB.value == "sft"
    plans = []
    for topology in _TOPOLOGY.value:
        rar_config.validate(config, num_devices=device_count(topology))
        logging.info("compiling %s for %s", name, topology)
        plan = plan_lib.compile_plan(config, topology, name=name, sft=sft)
        print(plan.text(), flush=True)
        plans.append(plan)
    if _SEARCH.value:
        found = plan_lib.search(config, _SEARCH.value, name=name, sft=sft,
                                max_compiles=_MAX_COMPILES.value,
                                progress=lambda line: print(line, flush=True))
        if found is None:
            print(f"{name}: no {_SEARCH.value} topology up to "
                  f"{SEARCH_TOPOLOGIES[_SEARCH.value][-1]} fits within {_MAX_COMPILES.value} "
                  "compiles")
        else:
            print(f"smallest {_SEARCH.value} topology that fits: {found.topology} with "
                  f"{found.settings}")
            plans.append(found)
    if plans:
        print(plan_lib.plans_table(plans))
    if _OUTPUT.value:
        write_json(_OUTPUT.value, [plan.to_json() for plan in plans])


def run() -> None:
    """Console-script entry point (``rar-compile``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
