"""The tunix half of benchmarks/grpo_step.py; runs inside the google-tunix 0.1.7 virtual environment.

Not importable from rar_jax (tunix lives in its own venv). It builds tunix's ``GRPOLearner`` on the
weights our side exported and runs its own training loop (``learner.train``) over a data set that
asks the parent for each step, so that the parent can alternate steps of ours and tunix's (a noisy
machine then affects both alike). Line protocol on stdin/stdout:

* first line: a JSON job ``{"model_dir": HF directory written by rar_jax's export_hf, "prompts":
  [chat-formatted strings], "prompt_ids": [[ids our tokenizer gives]], "num_generations": G,
  "max_new_tokens": int, "prompt_length": padded prompt length, "no_eos_id": int, "rope_theta":
  ..., "bos_id": ..., "beta": ..., "learning_rate": ..., "temperature": ..., "epsilon": ...,
  "max_grad_norm": ..., "adam": {"b1", "b2", "eps", "weight_decay"}}``: loads the weights twice
  (policy and reference) with tunix's Llama3 in float32, checks that its tokenization of the
  prompts equals ours, answers ``{"ready": true, "load_s": ...}``;
* then a line ``{"step": i}`` per step: tunix runs one whole GRPO step (rollout of G answers per
  prompt, reward, reference log-probs, one update) and answers ``{"seconds": wall time, "cpu_s":
  process CPU time (all threads), "sample_s", "reference_s", "update_s": the three phases,
  "answer_tokens": generated tokens, "reward_mean": ...}``;
* an empty line ends the run (tunix's loop returns) and the worker.

tunix's Llama3 gets the two fixes of benchmarks/tunix_sampler_worker.py (its docstring says why):
the config's RoPE theta (``use_config_rope_theta``) and pad id = ``vocab_size``, so that it decodes
the model ours decodes. The same work as ours (benchmarks/grpo_step.py): the same prompts, G, padded
prompt length and new tokens; sampling at the same temperature over the whole vocabulary; EOS disabled (the tokenizer's
EOS is an id no token has, so every answer has exactly ``max_new_tokens`` tokens); the reward
:func:`distinct_words`, written as ``rar_jax.judges.programmatic.distinct_words``; tunix's GRPO loss
with sequence-mean-token-mean aggregation, clip epsilon 0.2, the k3 (``low_var_kl``) KL estimator
with ``beta`` against a reference model; one update per step (``num_iterations=1``, so no old
log-prob pass, as ours with ``rl.old_logprobs="current"``); AdamW after global-norm clipping at a
constant learning rate. The phases are timed by wrapping the cluster's ``generate``,
``get_ref_per_token_logps`` and ``update_actor`` and waiting for their results (ours waits for its
reference pass too); a step's time runs from handing tunix the batch until it asks for the next
one, with the updated weights waited for.
"""

from __future__ import annotations

import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.models.llama3 import params as llama3_params
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout

from tunix_sampler_worker import (TokenizerForTunix, check_tokenization, llama3_config, reply,
                                  use_config_rope_theta)


def distinct_words(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """Distinct words / words of each completion (0.0 without words): rar_jax's ``distinct_words``."""
    del prompts
    rewards = []
    for completion in completions:
        words = str(completion).split()
        rewards.append(len(set(words)) / len(words) if words else 0.0)
    return rewards


class AnswerTokenizer(TokenizerForTunix):
    """Decodes without special tokens, as our sampler decodes answers (the reward reads the text)."""

    def decode(self, ids: list[int], **_: object) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)


class PhaseClock:
    """Seconds spent in the wrapped calls since the last ``take``; each call is waited for."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.answer_tokens = 0
        self.rewards: list[float] = []

    def wrap(self, name: str, fn, wait_for=lambda out: out):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            jax.block_until_ready(wait_for(out))
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            return out

        return timed

    def take(self) -> dict[str, float]:
        taken = {f"{name}_s": value for name, value in self.seconds.items()}
        self.seconds = {}
        return taken


def build_learner(job: dict, clock: PhaseClock) -> grpo_learner.GRPOLearner:
    """tunix's GRPOLearner for the job (see the module docstring), its calls timed by ``clock``."""
    model_dir = job["model_dir"]
    config = llama3_config(model_dir, job["rope_theta"])
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    reference = llama3_params.create_model_from_safe_tensors(model_dir, config, mesh, dtype=jnp.float32)
    graphdef, params = nnx.split(reference)
    actor = nnx.merge(graphdef, jax.tree.map(jnp.copy, params))
    use_config_rope_theta(config)  # Before anything is traced (tunix_sampler_worker's docstring).
    # EOS is an id no token has: every answer runs to max_new_tokens, as on our side. The pad id is
    # vocab_size, which no prompt or answer token holds, as in tunix_sampler_worker.
    tokenizer = AnswerTokenizer(
        f"{model_dir}/tokenizer.json", job["bos_id"], job["no_eos_id"], pad_id=config.vocab_size
    )
    check_tokenization(tokenizer, job["prompts"], job["prompt_ids"])

    adam = job["adam"]
    optimizer = optax.chain(
        optax.clip_by_global_norm(job["max_grad_norm"]),
        optax.adamw(job["learning_rate"], b1=adam["b1"], b2=adam["b2"], eps=adam["eps"],
                    weight_decay=adam["weight_decay"]),
    )
    prompt_length, max_new = int(job["prompt_length"]), int(job["max_new_tokens"])
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={role: mesh for role in (rl_cluster_lib.Role.ACTOR, rl_cluster_lib.Role.REFERENCE,
                                              rl_cluster_lib.Role.ROLLOUT)},
        rollout_engine="vanilla",
        offload_to_cpu=False,
        training_config=rl_cluster_lib.RLTrainingConfig(
            actor_optimizer=optimizer,
            eval_every_n_steps=10**9,
            max_steps=10**9,  # The parent ends the run.
        ),
        rollout_config=base_rollout.RolloutConfig(
            max_tokens_to_generate=max_new,
            max_prompt_length=prompt_length,
            kv_cache_size=prompt_length + max_new,
            temperature=float(job["temperature"]),
            top_p=1.0,
            top_k=None,
        ),
    )
    cluster = rl_cluster_lib.RLCluster(actor=actor, reference=reference, tokenizer=tokenizer,
                                       cluster_config=cluster_config)
    # Instance attributes shadow the methods the learner calls through self.rl_cluster.
    cluster.generate = clock.wrap("sample", cluster.generate, wait_for=lambda out: ())  # On the host.
    cluster.get_ref_per_token_logps = clock.wrap("reference", cluster.get_ref_per_token_logps)
    cluster.update_actor = clock.wrap(
        "update", cluster.update_actor, wait_for=lambda _: nnx.state(cluster.actor_trainer.model))
    generate = cluster.generate

    def generate_counting(*args, **kwargs):
        out = generate(*args, **kwargs)
        clock.answer_tokens += sum(len(tokens) for tokens in out.tokens)
        return out

    cluster.generate = generate_counting

    def reward(prompts, completions, **kwargs):
        values = distinct_words(prompts, completions, **kwargs)
        clock.rewards.extend(values)
        return values

    algo = grpo_learner.GRPOConfig(
        num_generations=int(job["num_generations"]),
        num_iterations=1,
        beta=float(job["beta"]),
        epsilon=float(job["epsilon"]),
        kl_loss_mode="low_var_kl",  # Schulman's k3, as ours (rl.kl.estimator = "k3").
        loss_agg_mode="sequence-mean-token-mean",
    )
    return grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=reward)


def steps_from_parent(job: dict, clock: PhaseClock, learner: grpo_learner.GRPOLearner):
    """The training data: one batch of the job's prompts per ``{"step": i}`` line of the parent.

    Asked for the next batch, it first reports the step just finished (its updated weights waited
    for), then waits for the parent's next line; an empty line ends the data and so the run.
    """
    started = None
    while True:
        if started is not None:
            jax.block_until_ready(nnx.state(learner.rl_cluster.actor_trainer.model))
            wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
            rewards = clock.rewards
            reply({"seconds": wall, "cpu_s": cpu, **clock.take(), "answer_tokens": clock.answer_tokens,
                   "reward_mean": sum(rewards) / len(rewards) if rewards else float("nan")})
            clock.answer_tokens, clock.rewards = 0, []
        line = sys.stdin.readline()
        if not line.strip():
            return
        json.loads(line)  # {"step": i}
        started = (time.perf_counter(), time.process_time())
        # One array, not a list: tunix repeats each leaf G times along its first axis (a list's
        # strings would each become a leaf).
        yield {"prompts": np.asarray(job["prompts"])}


def main() -> None:
    job = json.loads(sys.stdin.readline())
    clock = PhaseClock()
    start = time.perf_counter()
    learner = build_learner(job, clock)
    reply({"ready": True, "load_s": time.perf_counter() - start, "device": str(jax.devices()[0])})
    learner.train(steps_from_parent(job, clock, learner))


if __name__ == "__main__":
    main()
