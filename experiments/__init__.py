"""Entry-point scripts (installed as ``rar_jax.experiments``; console scripts in setup.py)."""
