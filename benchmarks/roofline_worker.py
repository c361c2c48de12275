"""One source tree's programs for ``benchmarks/roofline.py --baseline``, built by that tree's own
``benchmarks/roofline.py``.

Started by `benchmarks.revisions.Worker` (working directory and ``PYTHONPATH``: the tree). It loads
``<tree>/benchmarks/roofline.py`` as a module, which puts its own tree first on ``sys.path``, so
its ``rar_jax`` and its ``benchmarks`` helpers are that tree's; every program is then built the way
that tree's roofline.py builds it, whatever the tree's sampler, cache, judge and train-step APIs
are:

* decode and the GRPO update: that module's ``decode_figures`` and ``train_figures`` build the
  program and hand it to the module-level ``timed_runs(run, repeats, prepare)``, as every
  roofline.py since 1c14401 does. While building, the worker replaces ``timed_runs`` by one that
  takes ``(run, prepare)`` and stops the function there, so the program is neither timed nor
  checked by the tree; the worker times it and checks the decode itself.
* judge verdict scoring: ``JaxJudge(model, tokenizer, prefix_reuse=..., batch_size=...)``'s
  ``score_binary`` over the prompts of ``judge_inputs``, as ``judge_figures`` calls it.

Each timed call goes through the tree's own ``timed_runs`` with no repeats (the seconds of one
call, with ``prepare`` untimed). Counting FLOPs and bytes is asked of the worker of this tree only
(``"count": true``): the parent divides both trees' times into this tree's counts, so that both
sides' fractions of a bound use the same formulas (``rar_jax.models.flops``).

Requests (one JSON line each, `benchmarks.revisions.serve`): ``{"build": "decode", "batch": b}``,
``{"build": "judge", "reuse": bool}`` or ``{"build": "train"}`` build a program (dropping the
previous one) and answer its first (compiling) call's seconds and what the parent compares (greedy
tokens, judge values, token counts; counts when asked); ``"run"`` answers ``{"seconds": s}`` of
one more call of the program built last.

    python benchmarks/roofline_worker.py --worker '{"prompt_length": 96, ...}'   # by roofline.py
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# Appended, not inserted: the tree's own files come first (PYTHONPATH, then the tree's roofline.py).
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.revisions import serve  # noqa: E402


# ------------------------------------------------------------------------------- inputs
def chat_prompt_ids(tree: ModuleType, tokenizer: Any, prompt_length: int) -> list[list[int]]:
    """Token ids of ``tree.QUESTIONS`` (benchmarks/sampler.py's) as one-turn chat prompts.

    Args:
        tree: a roofline.py module (its ``QUESTIONS``).
        tokenizer: the model's tokenizer.
        prompt_length: the padded prompt length; every prompt must fit.
    """
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}])
             for q in tree.QUESTIONS]
    ids = [tokenizer.encode(text) for text in texts]
    if max(map(len, ids)) > prompt_length:
        raise SystemExit(f"a benchmark prompt is longer than rl.max_prompt_length={prompt_length}")
    return ids


def judge_inputs(tree: ModuleType, dataset: str, path: str, examples: int, max_prompts: int
                 ) -> tuple[list, list[int]]:
    """(prompts, groups) of every criterion of the first ``examples`` answers of ``dataset``
    (``"healthbench"`` or ``"kqa"``, read from ``path``), the first ``max_prompts`` of them
    (0: all).

    Args:
        tree: a roofline.py module (its ``healthbench_pairs``, ``kqa_pairs``, ``judge_prompts``).
    """
    pairs = (tree.healthbench_pairs if dataset == "healthbench" else tree.kqa_pairs)(path).pairs
    answers = set(list(dict.fromkeys(p.answer_id for p in pairs))[:examples])
    prompts, groups = tree.judge_prompts([p for p in pairs if p.answer_id in answers])
    if max_prompts:
        prompts, groups = prompts[:max_prompts], groups[:max_prompts]
    return prompts, groups


# ------------------------------------------------------------------------------- programs
class Captured(Exception):
    """Raised by `capture` to stop a tree's ``*_figures`` function at its ``timed_runs`` call."""

    def __init__(self, run: Callable[..., Any], prepare: Callable[[], Any] | None):
        super().__init__("program captured")
        self.run, self.prepare = run, prepare


def capture(run: Callable[..., Any], repeats: int, prepare: Callable[[], Any] | None = None):
    """Stands in for a tree's ``timed_runs`` while a program is built."""
    raise Captured(run, prepare)


def captured_program(tree: ModuleType, build: Callable[[], Any]
                     ) -> tuple[Callable[..., Any], Callable[[], Any] | None]:
    """``(run, prepare)`` that ``build()`` (one of ``tree``'s ``*_figures`` calls) hands to
    ``tree.timed_runs``."""
    original = tree.timed_runs
    tree.timed_runs = capture
    try:
        build()
    except Captured as program:
        return program.run, program.prepare
    finally:
        tree.timed_runs = original
    raise RuntimeError(f"{tree.__file__}: the program was not timed through timed_runs")


class TreePrograms:
    """Builds and times one program at a time with ``tree``'s own roofline.py functions.

    Args:
        tree: the tree's roofline.py, loaded as a module.
        settings: the shapes the parent chose (keys of ``roofline.worker_settings``) and
            ``count``: whether to count FLOPs and bytes (this tree's worker only).
    """

    def __init__(self, tree: ModuleType, settings: dict[str, Any]):
        self.tree, self.settings = tree, settings
        self.config = tree.quickstart_config()
        self.model, self.tokenizer = tree.load_from_config(self.config.model)
        self.program: tuple[Callable[..., Any], Callable[[], Any] | None] | None = None

    def timed(self) -> tuple[float, Any]:
        """Seconds and result of one call of the program built last (``tree.timed_runs``)."""
        run, prepare = self.program
        results = []

        def kept(*argument: Any) -> Any:
            results.append(run(*argument))
            return results[-1]

        seconds, _ = self.tree.timed_runs(kept, 0, prepare)
        return seconds, results[0]

    def answer(self, line: str) -> dict[str, Any]:
        """One request (module docstring) -> its JSON-able answer."""
        if line == "run":
            return {"seconds": self.timed()[0]}
        request = json.loads(line)
        self.program = None
        build = {"decode": self.decode, "judge": self.judge, "train": self.train}[request["build"]]
        return build(request)

    def decode(self, request: dict[str, Any]) -> dict[str, Any]:
        """The decode loop of ``request["batch"]`` rows (``tree.decode_figures``)."""
        import jax.numpy as jnp
        import numpy as np

        tree, s, batch = self.tree, self.settings, request["batch"]
        prompt_length, max_new = s["prompt_length"], s["max_new_tokens"]
        sampler = tree.Sampler(self.model, self.tokenizer, stop_ids=(tree.NO_EOS_ID,),
                               prompt_buckets=(prompt_length,))
        prompts = chat_prompt_ids(tree, self.tokenizer, prompt_length)
        self.program = captured_program(tree, lambda: tree.decode_figures(
            sampler, prompts, batch, prompt_length, max_new, 1))
        first, out = self.timed()
        steps = int(out.step) - 1
        if not bool(jnp.all(out.lengths == steps + 1)):
            raise RuntimeError(f"decode batch {batch}: a row stopped before step {steps}")
        figures = {"first_call_s": first, "decode_steps": steps,
                   "tokens": np.asarray(out.tokens).tolist()}
        if s["count"]:
            window = sampler.attention_window(prompt_length, 1, max_new)
            figures.update(tree.decode_counts(sampler.config, out.cache, batch, window))
        return figures

    def judge(self, request: dict[str, Any]) -> dict[str, Any]:
        """Verdict scoring with (``request["reuse"]``) or without prefix reuse."""
        tree, s = self.tree, self.settings
        prompts, groups = judge_inputs(tree, s["judge_dataset"], s["judge_path"],
                                       s["judge_examples"], s["judge_max_prompts"])
        judge = tree.JaxJudge(self.model, self.tokenizer, prefix_reuse=request["reuse"],
                              batch_size=s["judge_batch_size"])
        counters = tree.count_flops(judge) if s["count"] else ()
        self.program = (lambda: judge.score_binary(prompts, groups), None)
        first, judgments = self.timed()
        stats = judge.last_stats
        figures = {"first_call_s": first, "judgments": len(prompts),
                   "real_tokens": stats.real_tokens, "padded_tokens": stats.padded_tokens,
                   "option_tokens": stats.option_tokens, "forwards": stats.forwards,
                   "values": [float(v) for v in judgments.values]}
        if s["count"]:
            figures["flops"] = sum(counter.flops for counter in counters)
        return figures

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """The GRPO update on ``train_rows x train_tokens`` (``tree.train_figures``)."""
        tree, s = self.tree, self.settings
        rows, tokens = s["train_rows"], s["train_tokens"]
        self.program = captured_program(
            tree, lambda: tree.train_figures(self.config, rows, tokens, 1))
        figures = {"first_call_s": self.timed()[0]}
        if s["count"]:
            figures.update(tree.train_counts(self.config, self.model.config, rows, tokens))
        return figures


def load_tree_roofline(tree: pathlib.Path) -> ModuleType:
    """``<tree>/benchmarks/roofline.py`` as a module (named ``tree_roofline``)."""
    spec = importlib.util.spec_from_file_location(
        "tree_roofline", tree / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        raise SystemExit("usage: roofline_worker.py --worker SETTINGS_JSON (started by "
                         "benchmarks/roofline.py --baseline)")
    programs = TreePrograms(load_tree_roofline(pathlib.Path.cwd()), json.loads(sys.argv[2]))
    print(json.dumps({"ready": True}), flush=True)
    serve(programs.answer)


if __name__ == "__main__":
    main()
