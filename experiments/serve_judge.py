"""Serve a JAX model as an OpenAI-compatible chat-completions judge (``rar-serve-judge``).

Puts a judge (the embedded SmolLM2, a .gguf file or an HF checkpoint directory) on a host where
other machines reach it with the HTTP judge backend
(``--config.judge.backend=http --config.judge.http.base_url=http://<host>:<port>/v1``). The
routes, the request fields and what happens to a client that hangs up are described in
:mod:`rar_jax.serving.server`.

Concurrent requests that arrive within ``--batch_window_ms`` are generated in one batch of at
most ``--max_batch_rows`` rows (``--batch_window_ms=0 --max_batch_rows=1``: one at a time); the
token prefix that a batch's prompts share is prefilled once (``--noprefix_reuse``: not).

    rar-serve-judge --model=smollm2 --host=0.0.0.0 --port=8000 --max_new_tokens_cap=1024
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app, flags

from rar_jax import cli
from rar_jax.serving.engine import ChatCompletionEngine
from rar_jax.serving.server import make_server

_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for all).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_MODEL = flags.DEFINE_string(
    "model", "smollm2", "'smollm2' (embedded), a .gguf file or an HF checkpoint directory."
)
_MAX_NEW_TOKENS_CAP = flags.DEFINE_integer(
    "max_new_tokens_cap", 1024, "Largest max_tokens a request may ask for (also the default)."
)
_SERVED_MODEL_NAME = flags.DEFINE_string(
    "served_model_name", "", "Model name in replies and /v1/models; default the --model name."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the keys of requests without a 'seed'.")
_CANCEL_CHECK_TOKENS = flags.DEFINE_integer(
    "cancel_check_tokens", 16,
    "Decode steps between checks that the client is still connected (a gone client's "
    "generation stops there).",
)
_BATCH_WINDOW_MS = flags.DEFINE_float(
    "batch_window_ms", 10.0,
    "Milliseconds the server waits after a request arrives for more to generate in the same "
    "batch (0: no wait; requests queued during a batch are still batched).",
)
_MAX_BATCH_ROWS = flags.DEFINE_integer(
    "max_batch_rows", 32, "Most rows (sum of the requests' n) generated in one batch.",
)

_PREFIX_REUSE = flags.DEFINE_boolean(
    "prefix_reuse", True,
    "Prefill the token prefix that a batch's prompts share (at least 32 tokens, e.g. one "
    "answer's judge prompts) once; --noprefix_reuse prefills every prompt whole.",
)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _MAX_NEW_TOKENS_CAP.value < 1:
        raise app.UsageError(f"--max_new_tokens_cap must be >= 1, got {_MAX_NEW_TOKENS_CAP.value}")
    if _BATCH_WINDOW_MS.value < 0:
        raise app.UsageError(f"--batch_window_ms must be >= 0, got {_BATCH_WINDOW_MS.value}")
    if _MAX_BATCH_ROWS.value < 1:
        raise app.UsageError(f"--max_batch_rows must be >= 1, got {_MAX_BATCH_ROWS.value}")
    from rar_jax.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(_MODEL.value)
    name = _SERVED_MODEL_NAME.value or pathlib.Path(_MODEL.value).name.removesuffix(".gguf")
    engine = ChatCompletionEngine(
        model,
        tokenizer,
        model_name=name,
        max_new_tokens_cap=_MAX_NEW_TOKENS_CAP.value,
        seed=_SEED.value,
        cancel_check_tokens=_CANCEL_CHECK_TOKENS.value,
        batch_window_s=_BATCH_WINDOW_MS.value / 1000,
        max_batch_rows=_MAX_BATCH_ROWS.value,
        prefix_reuse=_PREFIX_REUSE.value,
    )
    server = make_server(engine, _HOST.value, _PORT.value)
    host, port = server.server_address[:2]
    print(f"serving {name} on http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()


def run() -> None:
    """Console-script entry point (``rar-serve-judge``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
