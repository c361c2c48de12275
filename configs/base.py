"""The base config: every option of rar-jax with its default (``--config=configs/base.py``).

The schema and the comment on each option live in the package, ``rar_jax/config/base.py``;
experiment files start from ``rar_jax.config.base_config()`` and override what they change.
"""

from rar_jax.config import base_config


def get_config():
    return base_config()
