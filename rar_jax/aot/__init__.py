"""Ahead-of-time planning: compile a config's programs for a TPU topology (or estimate them for
a GPU) on a CPU host, and read memory, FLOPs and a roofline step time off the compiled programs
(``rar-compile``)."""
