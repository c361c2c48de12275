"""Base configuration: every option of rar-jax, each with a one-line comment.

Experiment files (``configs/*.py``) start from this config (``rar_jax.config.base_config()``)
and override what they change. On the command line:
``--config=configs/x.py --config.rl.num_generations=8``. ``rar_jax.config.validate``
checks a finished config (unknown keys, wrong types, bad choices, contradictions) before anything
compiles; the allowed values of a choice are the names in the registry of the code that reads it.
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()

    # --- Run -------------------------------------------------------------------------------------
    config.seed = 0  # Seed of every random choice of the run (sampling, bootstrap, data order).
    config.output_dir = "runs/default"  # Folder for metrics, reports and checkpoints.
    config.compilation_cache_dir = "auto"  # Persistent XLA compilation cache (a second run skips compiling): "auto" = $XDG_CACHE_HOME/rar_jax/xla (else ~/.cache/rar_jax/xla), a folder, or "" = off.

    # --- Multi-host (jax.distributed) -------------------------------------------------------------
    config.distributed = config_dict.ConfigDict()
    config.distributed.initialize = False  # Call jax.distributed.initialize() first (TPU pods, multi-node GPU).
    config.distributed.coordinator_address = ""  # host:port of process 0; "" = auto-detect (TPU, SLURM, ...).
    config.distributed.num_processes = 0  # Processes in the job; 0 = auto-detect.
    config.distributed.process_id = -1  # This process's index; -1 = auto-detect.

    # --- Training data (rar_jax.data.examples) ---------------------------------------------------
    config.data = config_dict.ConfigDict()
    config.data.format = "healthbench"  # Record layout: healthbench, rar or kqa.
    config.data.train_path = ""  # JSONL of training prompts, or tfds:<name>[/<config>]:<split> (rar-build-dataset).
    config.data.train_limit = 0  # Read at most this many training records; 0 = all.
    config.data.eval_path = ""  # Held-out prompts (JSONL or tfds:...); "" = hold out data.eval_size training records.
    config.data.max_rubric_chars = 0  # Leave out examples whose criteria texts are longer (judge cost); 0 = no limit.
    config.data.tfds_data_dir = ""  # Where rar-build-dataset wrote the TFDS data sets; "" = $TFDS_DATA_DIR.
    config.data.eval_size = 0  # Held-out records taken (seeded) from train_path when eval_path is "".
    config.data.require_reference = False  # Leave out (and count) examples without a reference answer: one pool for every method (paper configs, Tables 1-3).

    # --- Policy model (rar_jax.models) -----------------------------------------------------------
    config.model = config_dict.ConfigDict()
    config.model.source = "smollm2"  # "smollm2" (embedded), a .gguf file or an HF checkpoint dir.
    config.model.dtype = "float32"  # Compute dtype: float32, bfloat16 or float16.
    config.model.param_dtype = "float32"  # Dtype the parameters are stored in.
    config.model.remat_policy = "none"  # Backward-pass rematerialisation of each scanned layer.
    config.model.attention_chunk = 1024  # Queries per attention block (bounds score memory); 0 = all at once.

    # --- Device mesh (rar_jax.parallel) ----------------------------------------------------------
    config.mesh = config_dict.ConfigDict()
    config.mesh.data = -1  # Data-parallel axis size; -1 = the devices left over by the other axes.
    config.mesh.fsdp = 1  # Fully-sharded data-parallel axis size (parameters sharded on embed).
    config.mesh.tensor = 1  # Tensor-parallel axis size (heads, mlp and vocab sharded).

    # --- GRPO (rar_jax.rl) -----------------------------------------------------------------------
    config.rl = config_dict.ConfigDict()
    config.rl.prompts_per_step = 6  # Prompts per step; x num_generations = rows (paper: 96 rows).
    config.rl.num_generations = 16  # G: answers sampled per prompt (the paper uses 16).
    config.rl.num_iterations = 1  # Policy updates per batch of rollouts (mu in the GRPO paper).
    config.rl.old_logprobs = "current"  # Source of pi_old: current (on-policy), sampler or recompute.
    config.rl.micro_batch_size = 0  # Rows per micro-batch of the update; 0 = the whole batch at once.
    config.rl.share_prompt_prefix = True  # Update and reference pass run each prompt once per group of its answers (same values up to rounding).
    config.rl.rollout_chunk_prompts = 0  # Prompts per sampler call (its KV cache holds their rows x num_generations); 0 = all of a step's prompts in one call.
    config.rl.logprob_chunk_size = 256  # Time steps per chunk of the lm-head when computing log-probs.
    config.rl.max_prompt_length = 512  # Longest chat-formatted prompt in tokens; longer ones are left out.
    config.rl.pad_prompts_to_max_length = False  # One prompt shape (fewer compiles, more padding) instead of buckets.
    config.rl.max_completion_length = 1024  # Longest sampled answer in tokens; Dr.GRPO's normaliser.
    config.rl.max_sequence_length = 0  # Context limit: max_prompt_length + max_completion_length must fit; 0 = none.
    config.rl.max_consecutive_skipped = 5  # Stop (with a checkpoint) after this many non-finite updates in a row.

    config.rl.advantage = config_dict.ConfigDict()
    config.rl.advantage.scale = "group_std"  # group_std (GRPO), batch_std, or none (Dr.GRPO).
    config.rl.advantage.std_ddof = 1  # Delta degrees of freedom of the std (1 = TRL / verl).
    config.rl.advantage.epsilon = 1e-4  # Added to the std before dividing.

    config.rl.loss = config_dict.ConfigDict()
    config.rl.loss.aggregation = "seq_mean_token_mean"  # Or token_mean (DAPO), seq_mean_token_sum_norm.
    config.rl.loss.epsilon_low = 0.2  # Lower clip range: ratio >= 1 - epsilon_low.
    config.rl.loss.epsilon_high = 0.2  # Upper clip range: ratio <= 1 + epsilon_high (DAPO: 0.28).
    config.rl.loss.dual_clip = 0.0  # Dual-clip constant c > 1 for negative advantages; 0 disables.
    config.rl.loss.importance_ratio = "token"  # token (PPO / GRPO) or sequence (GSPO).

    config.rl.kl = config_dict.ConfigDict()
    config.rl.kl.beta = 0.0  # KL coefficient; 0 means no reference model is created at all.
    config.rl.kl.estimator = "k3"  # k1, k2 or k3 (Schulman's estimators of KL(pi || pi_ref)).
    config.rl.kl.clamp = 0.0  # Clip each per-token KL estimate to [-clamp, clamp]; 0 disables.
    config.rl.kl.reference_on_host = False  # Keep the reference weights in host memory between uses.

    # --- Rollout sampling (rar_jax.models.sampler) -----------------------------------------------
    config.sampling = config_dict.ConfigDict()
    config.sampling.temperature = 1.0  # Sampling temperature of the rollouts (the paper: 1.0).
    config.sampling.top_k = 0  # Keep only the k most likely tokens; 0 disables.
    config.sampling.top_p = 1.0  # Nucleus sampling mass; 1.0 disables.

    # --- Optimiser (rar_jax.rl.optimizer) --------------------------------------------------------
    config.optim = config_dict.ConfigDict()
    config.optim.learning_rate = 5e-6  # Peak learning rate (the paper: 5e-6).
    config.optim.warmup_fraction = 0.1  # Linear warm-up over this fraction of steps, then constant.
    config.optim.num_steps = 300  # Optimiser steps of the run (the paper: 300).
    config.optim.weight_decay = 0.0  # AdamW decoupled weight decay.
    config.optim.beta1 = 0.9  # AdamW first-moment decay.
    config.optim.beta2 = 0.999  # AdamW second-moment decay.
    config.optim.eps = 1e-8  # AdamW epsilon.
    config.optim.max_grad_norm = 1.0  # Clip the global gradient norm to this; 0 disables.

    # --- Supervised fine-tuning on reference answers (rar-sft, rar_jax.rl.sft) -------------------
    # rar-sft reads the same data, model, optim, mesh, checkpoint and train keys as rar-train, and
    # from rl: max_prompt_length, max_completion_length (longer reference answers are cut there),
    # micro_batch_size and logprob_chunk_size.
    config.sft = config_dict.ConfigDict()
    config.sft.batch_size = 64  # Examples (prompt + reference answer) per SFT step.

    # --- Checkpoints (rar_jax.checkpoint) -------------------------------------------------------
    config.checkpoint = config_dict.ConfigDict()
    config.checkpoint.max_to_keep = 3  # Newest checkpoints kept under <output_dir>/checkpoints.
    config.checkpoint.async_save = True  # Write checkpoints in the background while training goes on.
    config.checkpoint.every_steps = 50  # Save every this many steps (and at the end); 0 = only at the end.
    config.checkpoint.resume = True  # Continue from the latest checkpoint in output_dir if there is one.

    # --- Loop and logging (rar_jax.rl.trainer, rar_jax.metrics) ----------------------------------
    config.train = config_dict.ConfigDict()
    config.train.eval_every = 50  # Greedy evaluation on the held-out examples every N steps; 0 = never.
    config.train.eval_criteria = True  # At each evaluation also check every rubric criterion of the held-out answers (rar_explicit judge).
    config.train.log_samples_every = 10  # Write sample answers to samples.jsonl every N steps; 0 = never.
    config.train.export_hf = False  # Write the final policy as an HF safetensors dir to <output_dir>/hf_export.
    config.metrics = config_dict.ConfigDict()
    config.metrics.tensorboard = True  # Also write TensorBoard event files.
    config.metrics.peak_flops_per_device = -1.0  # Peak FLOP/s of one device for MFU; -1 = the chip's bf16 peak from rar_jax.parallel.chips (none on CPU), 0 = not reported.

    # --- Rubrics (rar_jax.rubrics) ---------------------------------------------------------------
    config.rubric = config_dict.ConfigDict()
    config.rubric.pitfall_polarity = "negative"  # Polarity of pitfalls without an item-level one.
    config.rubric.ablation = "all"  # all, essential_only or no_pitfalls (the paper's Table 2).

    # --- Reward aggregation (rar_jax.judges.aggregation) -----------------------------------------
    config.reward = config_dict.ConfigDict()
    config.reward.explicit_normalization = "category_weights"  # Or signed_abs (raw signed weights).
    config.reward.category_weights = config_dict.ConfigDict()  # The paper's fixed category weights.
    config.reward.category_weights.essential = 1.0  # Weight of Essential criteria.
    config.reward.category_weights.important = 0.7  # Weight of Important criteria.
    config.reward.category_weights.optional = 0.3  # Weight of Optional criteria.
    config.reward.category_weights.pitfall = 0.9  # Weight of Pitfall criteria (v1 of the paper: 0.8).
    config.reward.min_judged_fraction = 0.8  # Verdict methods: score over the judged criteria when at least this share of the rubric was judged, else NaN (1 = all).
    config.reward.rating_normalization = "min_max"  # 1-10 rating -> reward: min_max (s-1)/9, over_max s/10.

    config.reward.method = "rar_implicit"  # direct_likert, reference_likert, rar_predefined, rar_explicit, rar_implicit, healthbench_points, programmatic.
    config.reward.programmatic_fn = "boxed_exact_match"  # programmatic method: boxed_exact_match (RLVR), distinct_words or length.

    # --- Judge (rar_jax.judges) ------------------------------------------------------------------
    config.judge = config_dict.ConfigDict()
    config.judge.backend = "jax"  # jax (in-process JAX model) or http (OpenAI-compatible server).
    config.judge.devices = 0  # jax backend: 0 = share the policy's devices; n = the last n devices, tensor-parallel.
    config.judge.model_source = "smollm2"  # Judge checkpoint of the jax backend: smollm2, a .gguf or an HF dir.
    config.judge.scoring = "verdict_probs"  # verdict_probs (read P(true) / rating distribution) or generate (write and parse JSON).
    config.judge.prefix_reuse = True  # Compute the shared (instructions, prompt, answer) prefix once per answer.
    config.judge.batch_size = 16  # Judge prompts per forward batch of the jax backend.
    config.judge.max_tokens = 64  # Most tokens a judge may write (generate scoring and the http backend).
    config.judge.max_resamples = 2  # Re-ask a written reply with no usable verdict up to this many times, sampled at temperature 1.
    config.judge.min_verdict_mass = 0.0  # Verdict tokens' probability mass below this makes the judgment fail (NaN).
    config.judge.show_categories = True  # Show the category label of each criterion to the implicit judge.
    config.judge.show_weights = True  # Show the weight of each criterion to the implicit judge.
    config.judge.templates_dir = ""  # Folder of replacement prompt templates; "" = the packaged ones; "paper" = the paper's appendix prompts ($RAR_SHARED_DATA/paper_prompts).
    config.judge.http = config_dict.ConfigDict()
    config.judge.http.base_url = "http://127.0.0.1:8000/v1"  # API root; requests go to {base_url}/chat/completions.
    config.judge.http.model = "judge"  # Model name sent with every request.
    config.judge.http.api_key_env = "OPENAI_API_KEY"  # Name of the environment variable holding the API key.
    config.judge.http.max_concurrency = 16  # Most requests in flight at once.
    config.judge.http.requests_per_minute = 0.0  # Request rate limit; 0 = none.
    config.judge.http.tokens_per_minute = 0.0  # Token rate limit (estimated, corrected by usage); 0 = none.
    config.judge.http.timeout_s = 60.0  # Deadline of one attempt in seconds.
    config.judge.http.max_attempts = 4  # Attempts per request, the first included.
    config.judge.http.backoff_initial_s = 1.0  # Backoff before the second attempt (before jitter).
    config.judge.http.backoff_max_s = 60.0  # Cap of the exponential backoff.
    config.judge.http.cache_dir = ""  # On-disk reply cache folder; "" disables it.
    config.judge.http.progress_min_requests = 32  # Show a progress bar for batches of at least this many requests.
    config.judge.http.reasoning_model = False  # OpenAI o-series server: send max_completion_tokens, no temperature / top_p.

    # --- HealthBench scoring (rar_jax.eval) ------------------------------------------------------
    config.healthbench = config_dict.ConfigDict()
    config.healthbench.graded_path = ""  # JSONL of graded HealthBench answers (per-criterion verdicts).
    config.healthbench.bootstrap_samples = 1000  # Resamples for the bootstrap std of clipped means.

    # --- Evaluation CLIs (rar-eval healthbench / gpqa; rar_jax.eval) -----------------------------
    config.eval = config_dict.ConfigDict()
    config.eval.healthbench_path = ""  # HealthBench JSONL, or tfds:healthbench[/<config>]:<split>, for rar-eval healthbench.
    config.eval.gpqa_path = ""  # GPQA CSV / JSONL with the official columns, or tfds:gpqa_diamond[/<config>]:test.
    config.eval.limit = 0  # Evaluate the first N prompts / questions; 0 = all.
    config.eval.gpqa_runs = 10  # GPQA runs, each with its own seeded choice order (the paper: mean of 10).
    config.eval.gpqa_verifier = True  # Ask the judge's Yes/No verifier when an answer has no letter; False = count it wrong.
    config.eval.gpqa_verifier_model = ""  # judge.http.model of the GPQA verifier (the paper: gpt-4o); "" = the judge's own model. Needs judge.backend=http.
    config.eval.max_new_tokens = 1024  # Most tokens of a policy answer (greedy decoding).
    config.eval.batch_size = 8  # Prompts per policy generate call.
    config.eval.grader_max_tokens = 256  # Most tokens of a grader / verifier reply (HealthBench's grader explains first).
    config.eval.grader_prompt = "simple_evals"  # HealthBench grader: simple_evals (the official template, $RAR_SHARED_DATA/healthbench/grader_template.txt) or rar_jax (our paraphrase).
    config.eval.grader_max_resamples = 5  # Re-ask a grading without a usable criteria_met up to this many times (simple-evals asks until success).
    config.eval.grader_scoring = "generate"  # HealthBench grading: generate (write and parse the grader JSON) or verdict_probs (read P(true) after '{"criteria_met": '; jax judge).
    config.eval.grader_threshold = 0.5  # verdict_probs grading: a criterion is met when P(true) >= this (P(true) is kept per criterion to re-threshold).


    # --- Rubric generation (rar-rubrics; rar_jax.judges.rubric_files) ---------------------------
    # rar-judge-alignment's generated rubrics use domain, max_attempts, max_tokens, temperature,
    # retry_temperature, min_items and max_items of this section too (batches: alignment.batch_size).
    # Attempt 1 is seeded with `seed`, attempt a > 1 with seed + a - 1.
    config.rubric_generation = config_dict.ConfigDict()
    config.rubric_generation.input = ""  # JSONL of questions ('question' or 'prompt') or HealthBench records, or tfds:<name>[/<config>]:<split>.
    config.rubric_generation.input_format = "auto"  # Record kind: questions, healthbench, or auto (HealthBench when a record has no question but prompt_id, rubrics, ideal_completions_data or example_tags).
    config.rubric_generation.output = ""  # JSONL of the valid rubrics (RaR format); with stats_only, the statistics JSON. The resolved config goes beside it (<output>.config.json).
    config.rubric_generation.failures_output = ""  # JSONL of the records without a valid rubric; "" = <output>.failures.jsonl.
    config.rubric_generation.stats_only = False  # Generate nothing: write the rubric statistics of the input (data.format records or tfds:...) to output (for rar-tables --rubric_stats).
    config.rubric_generation.domain = "medical"  # Rubric-generation prompt: medical or science.
    config.rubric_generation.use_reference = True  # Show the reference answer to the generator when a record has one.
    config.rubric_generation.require_reference = False  # Leave out (and count) records without a reference answer (one pool for the files with and without reference).
    config.rubric_generation.max_attempts = 3  # Attempts per question, the first included.
    config.rubric_generation.max_tokens = 2048  # Most tokens per generated rubric.
    config.rubric_generation.temperature = 0.0  # Temperature of attempt 1 (0 = greedy).
    config.rubric_generation.retry_temperature = 0.8  # Temperature of attempts 2.. (> 0 so a retry can differ).
    config.rubric_generation.min_items = 7  # Fewest rubric items accepted.
    config.rubric_generation.max_items = 20  # Most rubric items accepted.
    config.rubric_generation.batch_size = 32  # Questions per generation call.
    config.rubric_generation.limit = 0  # Use only the first N records; 0 = all.

    # --- Judge alignment, the paper's Figure 3 (rar-judge-alignment; rar_jax.eval.judge_alignment_run)
    # Outputs go to output_dir (with the resolved config, config.json).
    config.alignment = config_dict.ConfigDict()
    config.alignment.data = ""  # HealthBench JSONL, or tfds:healthbench[/<config>]:<split>.
    config.alignment.limit = 0  # Use the first N prompts with an ideal completion; 0 = all.
    config.alignment.generator = "smollm2"  # Writes the perturbed answers: a JAX model source (smollm2, .gguf, HF dir) or http:<model>@<base_url>.
    config.alignment.perturbations = ""  # JSONL store of perturbed answers (reused across runs); "" = <output_dir>/perturbations.jsonl.
    config.alignment.perturb_max_tokens = 1024  # Most tokens per perturbed answer.
    config.alignment.perturb_temperature = 0.0  # Temperature of the perturbation (0 = greedy).
    config.alignment.rubric_generator = ""  # Writes the generated rubrics (same forms as generator); "" = alignment.generator.
    config.alignment.generated_rubrics = ""  # JSONL store of the rubrics generated without reference ("_reference" before .jsonl: with it); "" = <output_dir>/generated_rubrics.jsonl.
    config.alignment.judges = "smollm2"  # Comma-separated judges: JAX model sources and/or http:<model>@<base_url>.
    config.alignment.conditions = "reference_rubric,generated_rubric,likert"  # Comma-separated conditions of rar_jax.eval.judge_alignment.CONDITIONS (default: Figure 3's three lines).
    config.alignment.ties = "wrong"  # A tied pair counts wrong (the paper) or half.
    config.alignment.confidence = 0.95  # Coverage of the Wilson interval of each accuracy.
    config.alignment.batch_size = 16  # Pairs per judge / generator call.

    return config
