"""Build one data set as TFDS array_record files (``rar-build-dataset``).

    rar-build-dataset --dataset=healthbench \\
        --manual_dir=../shared/data/healthbench --data_dir=~/tensorflow_datasets
    rar-build-dataset --dataset=gpqa_diamond --manual_dir=~/gpqa \\
        --data_dir=~/tensorflow_datasets --gpqa_seed=3 --gpqa_runs=10

Prints the split sizes and the counts of ``metadata.json`` (rows read, skipped, deduplicated,
without reference). Read the result with ``rar_jax.data.sources`` or, in a config,
``data.train_path = "tfds:<name>[/<config>]:<split>"`` where the trainer takes locations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import app, flags

from rar_jax import cli
from rar_jax.data.builders import BUILDERS, build, gpqa_config

_DATASET = flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "The data set to build.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the downloaded files.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get("TFDS_DATA_DIR"), "TFDS data directory (default TFDS_DATA_DIR).")
_SKIP_MALFORMED = flags.DEFINE_bool(
    "skip_malformed", False, "Skip (log and count) malformed rows instead of stopping.")
_GPQA_SEED = flags.DEFINE_integer("gpqa_seed", 0, "gpqa_diamond: seed of the answer orders.")
_GPQA_RUNS = flags.DEFINE_integer("gpqa_runs", 10, "gpqa_diamond: answer orders per question.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if a build exists.")


def main(argv: Sequence[str]) -> None:
    """Builds ``--dataset`` and prints its splits and counts."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _DATA_DIR.value:
        raise app.UsageError("set --data_dir (or TFDS_DATA_DIR)")
    if _DATASET.value == "gpqa_diamond":
        config = gpqa_config(_GPQA_SEED.value, _GPQA_RUNS.value,
                             skip_malformed=_SKIP_MALFORMED.value)
    else:
        config = "skip" if _SKIP_MALFORMED.value else None
    builder = build(_DATASET.value, manual_dir=os.path.expanduser(_MANUAL_DIR.value),
                    data_dir=os.path.expanduser(_DATA_DIR.value), config=config,
                    overwrite=_OVERWRITE.value)
    print(f"{builder.name}/{builder.builder_config.name} -> {builder.data_path}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} examples")
    print(json.dumps(dict(builder.info.metadata), indent=1))


def run() -> None:
    """Console-script entry point."""
    flags.mark_flags_as_required(["dataset", "manual_dir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
