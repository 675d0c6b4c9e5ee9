"""
One GRPO step: train_rl.py's `grpo_step` vs TRL's `GRPOTrainer`, same checkpoint, same work, side by side.

    pip install -r requirements-bench.txt && python bench_grpo.py

What is measured: the wall time of one whole GRPO step, from prompts to updated weights: sample
G completions per prompt (KV cache, temperature 1), decode and score them, group advantages,
reference log-probs (beta > 0), one forward/backward over all rollouts, clip the gradient norm,
one AdamW step. Ours is `train_rl.grpo_step`, called unchanged; TRL's is one iteration of
`GRPOTrainer.train()`. Each side runs a warm-up step, then `--repeats` steps, interleaved (a
trainer callback runs our step after each of TRL's, outside TRL's clock) so background load hits
both alike; the best step counts. Each side's best step is also split by phase: sampling,
reference log-probs, policy forward+backward, gradient clipping + AdamW, the rest (rewards,
advantages, bookkeeping), from timers wrapped around the functions each side calls for them:
ours `generate`, `completion_logp` (with and without grad), `Tensor.backward` and
`parallel.optimizer_step`; TRL's `_generate`, `_get_per_token_logps_and_entropies`,
`_prepare_inputs`, `training_step`, `_clip_grad_norm` and its optimizer-step callbacks.

What is equal on both sides:
1. The checkpoint: a random tiny Qwen2, fp32, tied embeddings, of one of two shapes (--shape):
   "bench" (vocab 1024, dim 256, 4 layers, 8 heads, 2 KV heads, SwiGLU 688; 3.0M parameters) or
   "tiny", the 0.8M model the default Countdown run trains (vocab 121, dim 128, 4 layers, 4 heads,
   2 KV heads, SwiGLU 384), saved with `Transformer.save_pretrained` and loaded by
   both: by `Transformer.from_pretrained` for ours, by `AutoModelForCausalLM` for TRL. Each side
   holds a policy and a frozen reference loaded from it.
2. The prompts and the tokenizer: 8 Countdown tasks (4 numbers) in the compact template
   ("36 12 7 5 -> 41\\n<think>", 15 to 18 tokens), through one WordLevel tokenizer of exactly the
   shape's vocab size, built here (a `tokenizers.Tokenizer` for ours, the same one wrapped in
   `PreTrainedTokenizerFast` for TRL). G = 8, so 64 rollouts per step.
3. Exactly 64 new tokens per rollout, 4096 in all: the tokenizer holds none of sample.STOP_TOKENS,
   so ours has no stop id, and TRL gets `min_new_tokens=64` (its eos, the pad token, cannot be
   sampled before then). Both sides assert it on every step.
4. The reward: rewards.countdown_reward on the decoded completion, on both sides. A random model
   never writes a `<answer>...</answer>` span token by token, so the tokenizer carries entries
   that are whole spans (11 of 1024; 1 of 121), e.g. "<answer>7</answer>" (a format-only answer,
   reward 0.1; never a stop token, since only the literal "</answer>" token is one). About half
   the completions hold one (41% with 1 of 121), so nearly every group has reward signal and the
   update is a real one.
5. The loss: token-mean aggregation over the whole batch (ours `token-mean`, TRL `dapo`), group
   std-normalised advantages, k3 KL with beta 0.04, clip range [0.8, 1.28] (inert: on-policy,
   one update per rollout), grad-norm clip 1.0, AdamW lr 1e-4 betas (0.9, 0.99) no weight decay,
   one forward/backward over all 64 rollouts (ours micro_batch 64, TRL per_device_train_batch_size
   64 and no gradient accumulation). Ours keeps groups with equal rewards (`--keep_equal`): TRL
   trains on them too, so neither side skips work that the other does.
6. fp32, no autocast, no gradient checkpointing (TRL enables it by default; it is turned off),
   the same process and the same torch threads.

What differs (and is counted, since it is part of each step):
- TRL runs through transformers' Trainer and accelerate: the dataloader and its repeat sampler,
  callbacks, the lr scheduler, its metric bookkeeping, and transformers' `generate` (logits
  processors, a dynamic KV cache) instead of sample.generate's preallocated cache.
- Each side computes its own metrics: both the entropy and the KL; ours also the Countdown
  accuracy, format and reflection rates; TRL its clip ratios, lengths and reward statistics.
- The samples differ (different generators), not their number or length.

Where the time goes (1 thread, this machine): about 155 GFLOP per step, of which the reference
forward, the policy forward and its backward over 64 x ~81 tokens are ~125 and sampling ~30, so
both sides are close to matmul-bound; the gap between them is mostly sampling and the backward.
On a busy machine pass --threads 1: with 2 threads and another job on the cores, every small op
waits for a descheduled thread and both sides slow down 10-20x.
"""

import argparse
import os
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
os.environ.setdefault("WANDB_DISABLED", "true")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renames, raised inside TRL

import torch

import countdown
import train_rl
from model import ModelConfig, Transformer
from rewards import countdown_reward
from sample import stop_ids_for

PHASES = ("sampling", "reference", "policy", "optimizer")


def timed(obj, name, split, phase):
    """Wrap obj.name so its wall time adds to split[phase] (phase: a name, or a function picking one)."""
    fn = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            split[phase() if callable(phase) else phase] += time.perf_counter() - t0

    setattr(obj, name, wrapper)
    return fn  # the original, to put back


SHAPES = {  # vocab, dim, layers, heads, kv heads, SwiGLU width
    "bench": (1024, 256, 4, 8, 2, 688),  # the shape every README number before --shape existed was measured on
    "tiny": (121, 128, 4, 4, 2, 384),  # the model train_sft.py / train_rl.py's default run trains (0.8M)
}


def n_answer_entries(vocab_size, new_tokens=64):
    """How many "<answer>k</answer>" entries make about half of the random completions hold one."""
    return max(1, round(vocab_size * (1 - 0.5 ** (1 / new_tokens))))


def build_tokenizer(vocab_size=1024):
    """A WordLevel tokenizer of exactly vocab_size entries that encodes the compact Countdown prompts."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = ["<pad>", "<unk>", " ", "\n", "->", "<think>", "</think>", *"0123456789", *"+-*/=()[]", "yes", "no"]
    vocab += [f"<answer>{k}</answer>" for k in range(n_answer_entries(vocab_size))]
    vocab += [f"w{i}" for i in range(vocab_size - len(vocab))]  # filler words
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d|\s"), behavior="isolated")  # digits, spaces one by one
    tok.decoder = decoders.Fuse()  # decode = concatenate the entries
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--shape", default="bench", choices=sorted(SHAPES), help="model shape (both sides)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group_size", type=int, default=8, help="G completions per prompt")
    ap.add_argument("--new_tokens", type=int, default=64, help="tokens sampled per completion (exactly)")
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per side, after one warm-up step")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    torch.manual_seed(0)
    G, B, N = args.group_size, args.prompts * args.group_size, args.new_tokens
    V, dim, n_layers, n_heads, n_kv_heads, inter_dim = SHAPES[args.shape]
    tok = build_tokenizer(V)
    assert tok.get_vocab_size() == V and not stop_ids_for(tok), f"the tokenizer must have {V} entries, no stop token"
    tasks = countdown.generate_tasks(args.prompts, seed=1, n_numbers=(4,))
    prompt_lens = [len(tok.encode(countdown.prompt_compact(t)).ids) for t in tasks]
    assert all(tok.token_to_id("<unk>") not in tok.encode(countdown.prompt_compact(t)).ids for t in tasks)
    cfg = ModelConfig(vocab_size=V, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      inter_dim=inter_dim, max_seq_len=512)

    with tempfile.TemporaryDirectory() as d:
        ckpt = os.path.join(d, "ckpt")
        Transformer(cfg).save_pretrained(ckpt, tokenizer=tok)

        # ours: train_rl.grpo_step with the tiny preset's flags, overridden to this step's shape
        rl_args = train_rl.get_args(["--init", ckpt, "--group_size", str(G), "--prompts_per_step", str(args.prompts),
                                     "--max_new_tokens", str(N), "--temperature", "1.0", "--beta", str(args.beta),
                                     "--lr", str(args.lr), "--micro_batch", str(B), "--keep_equal",
                                     "--template", "compact", "--dtype", "float32", "--device", "cpu"])
        model = Transformer.from_pretrained(ckpt, dtype=torch.float32)
        ref = Transformer.from_pretrained(ckpt, dtype=torch.float32).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=rl_args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        autocast = torch.autocast("cpu", enabled=False)

        # TRL: the same checkpoint, tokenizer, prompts, reward and loss
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(V), pad_token="<pad>", eos_token="<pad>")
        data = Dataset.from_list([{"prompt": countdown.prompt_compact(t), "numbers": list(t.numbers),
                                   "target": t.target} for t in tasks])
        trl_lens, trl_rewards = [], []

        def reward_countdown(prompts, completions, completion_ids, numbers, target, **kw):
            trl_lens.extend(map(len, completion_ids))
            r = [countdown_reward(c, n, t) for c, n, t in zip(completions, numbers, target)]
            trl_rewards.append(r)
            return r

        config = GRPOConfig(
            output_dir=os.path.join(d, "trl"), per_device_train_batch_size=B, gradient_accumulation_steps=1,
            num_generations=G, max_completion_length=N, generation_kwargs={"min_new_tokens": N},
            temperature=1.0, top_p=1.0, top_k=0, beta=args.beta, epsilon=0.2, epsilon_high=0.28,
            loss_type="dapo", scale_rewards="group", num_iterations=1, learning_rate=args.lr,
            adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
            max_steps=1 + args.repeats, use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,
            report_to="none", logging_strategy="no", save_strategy="no", disable_tqdm=True, seed=0,
            dataloader_num_workers=0, log_completions=False)
        theirs = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        trainer = GRPOTrainer(model=theirs, reward_funcs=reward_countdown, args=config, train_dataset=data,
                              processing_class=hf_tok)

        ours_t, trl_t, ours_recs, ours_split, trl_split = [], [], [], [], []
        split = dict.fromkeys(PHASES + ("prepare", "step"), 0.0)  # TRL's current step, by phase
        # TRL: _generate samples; log-probs without grad are the reference's (its behaviour log-probs are
        # skipped on-policy); training_step minus its _prepare_inputs is the policy forward and backward
        grad_phase = lambda: "policy" if torch.is_grad_enabled() else "reference"  # noqa: E731
        timed(trainer, "_generate", split, "sampling")
        timed(trainer, "_get_per_token_logps_and_entropies", split, grad_phase)
        timed(trainer, "_prepare_inputs", split, "prepare")
        timed(trainer, "training_step", split, "step")
        timed(trainer, "_clip_grad_norm", split, "optimizer")

        def our_step(step):
            """train_rl.grpo_step, unchanged, with timers around what it calls; -> (seconds, record, split)."""
            ours = dict.fromkeys(PHASES, 0.0)
            originals = [(train_rl, "generate", timed(train_rl, "generate", ours, "sampling")),
                         (train_rl, "completion_logp", timed(train_rl, "completion_logp", ours, grad_phase)),
                         (torch.Tensor, "backward", timed(torch.Tensor, "backward", ours, "policy")),
                         (train_rl.parallel, "optimizer_step", timed(train_rl.parallel, "optimizer_step", ours,
                                                                     "optimizer"))]
            try:
                t0 = time.perf_counter()
                rec = train_rl.grpo_step(model, ref, opt, tok, tasks, rl_args, step, autocast)
                return time.perf_counter() - t0, rec, ours
            finally:
                for obj, name, fn in originals:
                    setattr(obj, name, fn)

        class Interleave(TrainerCallback):
            """After each TRL step (its clock stopped), run one of ours, then restart TRL's clock."""

            def on_train_begin(self, *a, **kw):
                self.t = time.perf_counter()

            def on_pre_optimizer_step(self, *a, **kw):
                self.t_opt = time.perf_counter()

            def on_optimizer_step(self, *a, **kw):
                split["optimizer"] += time.perf_counter() - self.t_opt

            def on_step_end(self, _args, state, *a, **kw):
                trl_t.append(time.perf_counter() - self.t)
                trl_split.append({**split, "policy": split["step"] - split["prepare"]})
                split.update(dict.fromkeys(split, 0.0))
                t, rec, phases = our_step(state.global_step)
                ours_t.append(t)
                ours_recs.append(rec)
                ours_split.append(phases)
                self.t = time.perf_counter()

        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training summary
        trainer.add_callback(Interleave())
        assert not trainer.model.is_gradient_checkpointing
        trainer.train()
        w0 = ref.embed_tokens.weight  # the checkpoint's: both policies must have moved away from it
        assert not torch.equal(model.embed_tokens.weight, w0)
        assert not torch.equal(trainer.model.get_input_embeddings().weight, w0)

    assert len(trl_t) == len(ours_t) == 1 + args.repeats
    assert trl_lens == [N] * B * (1 + args.repeats), "TRL did not sample exactly N tokens per rollout"
    assert all(r["length"] == N for r in ours_recs), "ours did not sample exactly N tokens per rollout"
    t_ours, t_trl = min(ours_t[1:]), min(trl_t[1:])

    def signal(rewards):  # share of groups whose G rewards are not all equal
        return sum(len(set(rewards[i : i + G])) > 1 for i in range(0, B, G)) / (B // G)

    trl_sig = sum(signal(r) for r in trl_rewards) / len(trl_rewards)
    our_sig = sum(r["groups_with_signal"] for r in ours_recs) / len(ours_recs)
    print(f"tiny Qwen2 ({args.shape}: vocab {V}, dim {dim}, {n_layers} layers, {n_heads} heads, {n_kv_heads} kv heads, "
          f"inter {inter_dim}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), fp32, CPU, "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}")
    print(f"one GRPO step: {args.prompts} Countdown prompts ({min(prompt_lens)}-{max(prompt_lens)} tokens) x G={G} "
          f"= {B} rollouts of exactly {N} new tokens, temperature 1, beta {args.beta}, k3 KL, token-mean loss, "
          f"one AdamW update")
    print(f"reward countdown_reward; groups with signal: ours {our_sig:.0%}, TRL {trl_sig:.0%}")
    print(f"best of {args.repeats} steps after one warm-up, interleaved "
          f"(all steps, s: ours {' '.join(f'{t:.2f}' for t in ours_t)}; TRL {' '.join(f'{t:.2f}' for t in trl_t)})")
    print(f"r1-mini train_rl.grpo_step: {t_ours:7.3f} s/step")
    print(f"TRL GRPOTrainer:            {t_trl:7.3f} s/step")
    print(f"ratio: {t_trl / t_ours:.2f}x")
    print("best steps by phase, s: sampling / reference log-probs / policy forward+backward / grad clip+AdamW / rest")
    for name, times, splits in (("r1-mini", ours_t, ours_split), ("TRL    ", trl_t, trl_split)):
        best = 1 + times[1:].index(min(times[1:]))
        parts = [splits[best][p] for p in PHASES]
        print(f"  {name}: " + " / ".join(f"{p:.3f}" for p in parts + [times[best] - sum(parts)]))


if __name__ == "__main__":
    main()
