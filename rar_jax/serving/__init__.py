"""Serving a JAX model as an OpenAI-compatible judge (``rar-serve-judge``)."""
