"""rar-jax: Rubrics as Rewards (RaR) post-training with GRPO in JAX."""

__version__ = "0.1.0"
