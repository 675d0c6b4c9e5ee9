"""
Supervised fine-tuning: cold start, distillation, rejection-sampling SFT. One file, top to bottom.

    python train_sft.py                               # the tiny Countdown cold start, from scratch, on a CPU
    python train_sft.py --data traces.jsonl --init DIR --out out/sft   # SFT any checkpoint on any traces

Design notes:
1. Data is JSONL, one {"prompt", "response"} (or {"messages": [...]}, Qwen chat format) per line.
   The loss is on response tokens only (and the end-of-text token after them): the model learns
   to answer, not to write prompts.
2. Without --data we run R1's stage 1 in miniature, since there is no model hub: generate Countdown
   tasks, write search traces with the teacher in countdown.py (--traces: search, optimal, or
   dfs, the search without the solver's oracle), train a tokenizer on that text
   (BPE, every digit its own token so arithmetic is learned digit by digit), then train a small
   model from random init. The fixed held-out tasks never appear in training.
3. Batches are drawn from a per-epoch permutation fixed by (seed, epoch) and bucketed by length
   (sort a window of 16 batches by length, so little compute is spent on padding). A batch is a
   function of the step number alone, which is what makes resuming exact.
4. Checkpoints are our HF-compatible format plus train_state.pt (optimizer, step) in the same
   directory, written atomically by save_pretrained. --resume continues bit for bit on a CPU.
5. The loss is normalised by the number of response tokens in the whole accumulated batch, so
   gradient accumulation gives the gradient of the big batch.
6. Under torchrun (parallel.py) --batch_size stays the whole micro-batch: each rank takes every
   W-th sequence of it and the response-token count is summed over ranks, so N processes take the
   steps one process takes.
7. --moe trains the cold-start model with MoE layers (model.py) of the dense model's active width.
   The routers' balancing bias moves after every optimizer step (parallel.optimizer_step), from
   the expert load of the step's real tokens (right padding excluded); the logs carry each MoE
   layer's max/mean load and dead experts.

    torchrun --standalone --nproc_per_node=4 train_sft.py --data traces.jsonl --init DIR   # --fsdp: shard it
"""

import json
import math
import os
import random
import time

import torch

import checkpoint
import cli
import parallel
from checkpoint import check_tokenizer, checkpoint_dir, load_tokenizer
from countdown import HELDOUT_MAX
from model import ModelConfig, Transformer, n_active_params, n_params
from sample import STOP_TOKENS, encode_ids, heldout_eval, pad

EVAL_TOKENS = 1024  # held-out evals stop here whatever --max_len (Countdown traces are under 300 tokens)
SPECIALS = ["<|endoftext|>", "<unk>", "<think>", "</think>", "<answer>", "</answer>"]


def get_args(argv=None):
    ap = cli.Parser("SFT / distillation / the tiny Countdown cold start")
    ap.add_argument("--data", default=None, help="JSONL of prompt/response; none: generate Countdown traces")
    ap.add_argument("--init", default=None,
                    help="checkpoint to start from (needed with --data; without --data it is fine-tuned on the traces)")
    ap.add_argument("--out", default="out/sft", help="output directory (checkpoint in OUT/ckpt)")
    ap.add_argument("--resume", action="store_true", help="continue the run in OUT")
    ap.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")
    # cold start data
    ap.add_argument("--traces", default="search", choices=["search", "optimal", "dfs", "guess"],
                    help="teacher traces (countdown.py: search_trace, optimal_trace, dfs_trace, guess_trace)")
    ap.add_argument("--n_train", type=cli.COUNT, default=100_000, help="Countdown training tasks")
    ap.add_argument("--vocab", type=cli.COUNT, default=128, help="tokenizer vocabulary for the cold start")
    # model (cold start)
    ap.add_argument("--dim", type=cli.COUNT, default=128)
    ap.add_argument("--n_layers", type=cli.COUNT, default=4)
    ap.add_argument("--n_heads", type=cli.COUNT, default=4)
    ap.add_argument("--n_kv_heads", type=cli.COUNT, default=2)
    ap.add_argument("--inter_dim", type=cli.COUNT, default=384)
    ap.add_argument("--max_len", type=cli.ranged(int, 16, 32768), default=512, help="context length; longer examples are dropped")
    # MoE (cold start; model.py): 0 routed experts is the dense model
    ap.add_argument("--moe", action="store_true",
                    help="the tiny MoE preset: 8 routed experts of width inter_dim/3, top 2, 1 shared expert, first "
                         "layer dense (active FFN width = --inter_dim, as the dense model's); the flags below override it")
    ap.add_argument("--n_routed_experts", type=cli.COUNT0, default=None, help="routed experts per MoE layer (0: dense)")
    ap.add_argument("--n_shared_experts", type=cli.COUNT0, default=None, help="always-on experts per MoE layer")
    ap.add_argument("--top_k", type=cli.COUNT, default=None, help="routed experts per token")
    ap.add_argument("--moe_inter_dim", type=cli.COUNT, default=None, help="width of one expert")
    ap.add_argument("--first_k_dense", type=cli.COUNT0, default=None, help="the first layers stay dense")
    ap.add_argument("--score_func", choices=["softmax", "sigmoid"], default="sigmoid", help="router scores")
    ap.add_argument("--bias_update_speed", type=cli.NONNEG, default=1e-3,
                    help="gamma of auxiliary-loss-free balancing (0: off)")
    ap.add_argument("--aux_loss_alpha", type=cli.NONNEG, default=0.0, help="sequence-wise balance loss (0: off)")
    # optimisation
    ap.add_argument("--steps", type=cli.COUNT, default=1200)
    ap.add_argument("--batch_size", type=cli.COUNT, default=64, help="sequences per micro-batch")
    ap.add_argument("--grad_accum", type=cli.COUNT, default=1)
    ap.add_argument("--lr", type=cli.POSITIVE, default=3e-3)
    ap.add_argument("--min_lr_ratio", type=cli.FRACTION, default=0.1, help="cosine decays to lr * this")
    ap.add_argument("--warmup", type=cli.COUNT0, default=100)
    ap.add_argument("--weight_decay", type=cli.NONNEG, default=0.1)
    ap.add_argument("--clip", type=cli.POSITIVE, default=1.0)
    # eval, logging, checkpoints
    ap.add_argument("--eval_every", type=cli.COUNT0, default=400, help="steps between evals (0: only at the end)")
    ap.add_argument("--eval_tasks", type=cli.ranged(int, 1, HELDOUT_MAX), default=100,
                    help="held-out tasks per size in periodic evals")
    ap.add_argument("--final_tasks", type=cli.ranged(int, 1, HELDOUT_MAX), default=500,
                    help="held-out tasks per size in the final eval")
    ap.add_argument("--save_every", type=cli.COUNT, default=500)
    ap.add_argument("--stop_at", type=cli.COUNT, default=None, help="stop after this step, as if killed (tests resume)")
    ap.add_argument("--seed", type=cli.COUNT0, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=cli.device)
    ap.add_argument("--threads", type=cli.ranged(int, 0, 256), default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2 (default: DDP)")
    ap.add_argument("--dist_timeout", type=cli.POSITIVE, default=30.0,
                    help="under torchrun: minutes a rank waits for the others before the job stops")
    args = ap.parse_args(argv)
    if args.dim % args.n_heads or (args.dim // args.n_heads) % 2 or args.n_heads % args.n_kv_heads:
        ap.error(f"--dim {args.dim}, --n_heads {args.n_heads}, --n_kv_heads {args.n_kv_heads}: dim must be n_heads "
                 "times an even head size, and n_heads a multiple of n_kv_heads")
    preset = dict(n_routed_experts=8, n_shared_experts=1, top_k=2, moe_inter_dim=max(1, args.inter_dim // 3),
                  first_k_dense=1) if args.moe else dict(n_routed_experts=0, n_shared_experts=0, top_k=2,
                                                         moe_inter_dim=args.inter_dim, first_k_dense=0)
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.n_routed_experts and args.top_k > args.n_routed_experts:
        ap.error(f"--top_k {args.top_k} is more than --n_routed_experts {args.n_routed_experts}")
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in OUT, --overwrite starts over: pick one")
    if args.data is not None and args.init is None and not args.resume:
        ap.error("--data needs --init, the checkpoint (with its tokenizer.json) to fine-tune")
    return args


# ----------------------------------------------------------------------------------------- data

def read_jsonl(path):
    """(prompt, response) pairs; a bad line is an error naming the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file" + (" (it is a directory)" if os.path.isdir(path) else ""))
    pairs = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise TypeError(f"expected a JSON object, got {type(rec).__name__}")
                if "messages" in rec:
                    pairs.append(chat_pair(rec["messages"]))
                else:
                    if not (isinstance(rec["prompt"], str) and isinstance(rec["response"], str)):
                        raise TypeError("prompt and response must be strings")
                    pairs.append((rec["prompt"], rec["response"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f"{path}:{n}: bad record ({type(e).__name__}: {e})") from None
    if not pairs:
        raise ValueError(f"{path}: no records")
    return pairs


def chat_pair(messages):
    """Qwen chat format: everything before the last assistant turn is the prompt."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's")
    turn = lambda m: f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    prompt = "".join(turn(m) for m in messages[:-1]) + "<|im_start|>assistant\n"
    return prompt, messages[-1]["content"] + "<|im_end|>"


def train_tokenizer(texts, vocab_size):
    """BPE over the task text with every digit a token of its own; special tags stay atomic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                       show_progress=False))
    return tok


def cold_start_data(args):
    """Write Countdown teacher traces (--traces) to OUT/train_TRACES.jsonl; return its path and a
    tokenizer: the checkpoint's (--resume, --init), else one trained on the traces."""
    import countdown

    path = os.path.join(args.out, f"train_{args.traces}.jsonl")
    if not (args.resume and os.path.exists(path)):
        tasks = countdown.train_tasks(args.n_train, args.seed)
        records = countdown.sft_records(tasks, random.Random(args.seed), kind=args.traces)
        if len(records) < len(tasks):
            print(f"{args.traces} traces: {len(tasks) - len(records)} of {len(tasks)} tasks left out (their search "
                  "does not fit)")
        checkpoint.write_jsonl(path, records)
    if args.resume or args.init:
        return path, load_tokenizer(os.path.join(args.out, "ckpt") if args.resume else args.init)
    texts = [p + r + "<|endoftext|>" for p, r in read_jsonl(path)[:20_000]]
    return path, train_tokenizer(texts, args.vocab)


def encode_pairs(tok, pairs, max_len):
    """Token ids and the number of prompt tokens of each example; drops examples longer than max_len."""
    eos = tok.token_to_id("<|endoftext|>")
    ends = [s for s in STOP_TOKENS if s != "</answer>"]
    stops = {i for i in map(tok.token_to_id, ends) if i is not None}
    if eos is None and not stops:
        raise ValueError(f"the tokenizer has none of the end tokens {ends}")
    data, unk, n_unk = [], tok.token_to_id("<unk>"), 0
    for prompt, response in pairs:
        p, r = encode_ids(tok, prompt), encode_ids(tok, response)
        n_unk += (p + r).count(unk) if unk is not None else 0
        if not r or r[-1] not in stops:  # the model must learn to stop: end with <|endoftext|> unless it ends already
            r = r + [eos if eos is not None else min(stops)]
        if len(p) + len(r) <= max_len:
            data.append((torch.tensor(p + r), len(p)))
    if n_unk:
        print(f"warning: {n_unk} tokens of the data are <unk>: the tokenizer cannot spell some of its characters")
    return data


def epoch_batches(data, batch_size, seed, epoch):
    """This epoch's batches: a permutation fixed by (seed, epoch), bucketed by length in windows."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(data), generator=g).tolist()
    batches = []
    window = batch_size * 16
    for i in range(0, len(perm) - batch_size + 1, window):
        chunk = sorted(perm[i : i + window], key=lambda j: len(data[j][0]))
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk) - batch_size + 1, batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def collate(data, ids, pad_id=0):
    """Right-padded inputs x, next-token targets y and the loss mask (response tokens only)."""
    seqs = [data[i][0] for i in ids]
    x, valid = pad([s[:-1] for s in seqs], pad_id=pad_id)
    y, _ = pad([s[1:] for s in seqs], pad_id=pad_id)
    # predict each response token from what precedes it (with no prompt, the first one has nothing to go on)
    first = torch.tensor([max(data[i][1] - 1, 0) for i in ids])[:, None]
    return x, y, valid & (torch.arange(x.shape[1])[None, :] >= first)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = parallel.setup(args.device, args.dist_timeout, args.fsdp)
    if args.batch_size < parallel.WORLD:
        raise ValueError(f"--batch_size {args.batch_size} is smaller than the {parallel.WORLD} processes that share it")
    parallel.from_rank0(lambda: cli.prepare_out(args.out, args.resume, args.overwrite))
    ckpt = os.path.join(args.out, "ckpt")
    resume_dir = checkpoint_dir(ckpt) if args.resume else None  # ckpt, or ckpt.old after a killed save
    torch.manual_seed(args.seed)
    t_start = time.time()

    # data and tokenizer
    if args.data is None:
        train_path, tok = parallel.from_rank0(lambda: cold_start_data(args))
    else:
        train_path, tok = args.data, load_tokenizer(resume_dir or args.init)
    data = encode_pairs(tok, read_jsonl(train_path), args.max_len)
    if len(data) < args.batch_size:
        raise ValueError(f"{train_path}: {len(data)} usable examples, fewer than one batch of {args.batch_size}")
    n_tok = sum(len(s) for s, _ in data)
    print(f"data: {len(data)} examples, {n_tok / len(data):.0f} tokens each on average, vocab {tok.get_vocab_size()}")

    # model and optimizer
    if args.resume:
        model = Transformer.from_pretrained(resume_dir, device=args.device)
    elif args.init:
        model = Transformer.from_pretrained(args.init, dtype=torch.float32, device=args.device)
    else:
        moe = {}
        if args.n_routed_experts:
            moe = dict(n_routed_experts=args.n_routed_experts, n_shared_experts=args.n_shared_experts,
                       top_k=args.top_k, moe_inter_dim=args.moe_inter_dim, first_k_dense=args.first_k_dense,
                       score_func=args.score_func, bias_update_speed=args.bias_update_speed,
                       aux_loss_alpha=args.aux_loss_alpha)
        cfg = ModelConfig(vocab_size=tok.get_vocab_size(), dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
                          n_kv_heads=args.n_kv_heads, inter_dim=args.inter_dim, max_seq_len=args.max_len,
                          rope_theta=10000.0, **moe)
        model = Transformer(cfg).to(args.device)
    check_tokenizer(tok, model, args.init or resume_dir or "the new tokenizer")
    print(f"model: {n_params(model) / 1e6:.2f}M parameters ({n_active_params(model) / 1e6:.2f}M active per token), "
          f"{model.cfg}")
    model = parallel.wrap(model, args.fsdp).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    step = 0
    if args.resume:
        state = checkpoint.load_train_state(resume_dir)
        parallel.load_optimizer(model, opt, state)
        step = state["step"]
        print(f"resumed from {resume_dir} at step {step}")

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    per_epoch = len(epoch_batches(data, args.batch_size, args.seed, 0))
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    log = parallel.metrics_log(metrics_path, args.resume, lambda r: r["step"] <= step and r.get("eval") != "final")

    def save():
        parallel.save(model, opt, ckpt, tok, step=step, args=vars(args))

    def evaluate(n_tasks, final=False):
        with autocast:
            res = {"step": step, **heldout_eval(parallel.plain(model), tok, n_tasks,
                                                max_new_tokens=min(args.max_len - 32, EVAL_TOKENS))}
        print(f"{'final ' if final else ''}eval @ step {step}: held-out greedy accuracy "
              f"3 numbers {res['eval_acc3']:.1%}, 4 numbers {res['eval_acc4']:.1%} ({n_tasks} tasks each)")
        log({"eval": "final" if final else "periodic", **res})
        return res

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=step, desc="sft", disable=parallel.RANK > 0 or None)
    t0, batches, batches_epoch = time.time(), None, -1
    while step < args.steps:
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        micro = []
        for a in range(args.grad_accum):
            i = step * args.grad_accum + a
            if i // per_epoch != batches_epoch:
                batches_epoch = i // per_epoch
                batches = epoch_batches(data, args.batch_size, args.seed, batches_epoch)
            micro.append(collate(data, batches[i % per_epoch][parallel.RANK :: parallel.WORLD]))  # this rank's share
        # normaliser over the whole accumulated batch, all ranks' shares (design notes 5, 6)
        n_resp = int(parallel.gathered(torch.tensor(sum(int(m.sum()) for _, _, m in micro))).sum())
        loss_sum = 0.0
        for a, (x, y, mask) in enumerate(micro):
            x, y, mask = x.to(args.device), y.to(args.device), mask.to(args.device)
            parallel.sync_grads(model, a == len(micro) - 1)
            real = mask.flip(1).cumsum(1).flip(1) > 0  # up to each row's last response token: not right padding
            with autocast:
                logp = model(x, targets=y, where=mask, load_mask=real)  # (n,) response tokens only
            loss = -logp.sum() * parallel.WORLD / n_resp  # times W: DDP / FSDP average the ranks' gradients
            loss.backward()
            loss_sum += loss.item()
        loss_sum = parallel.means({"loss": loss_sum}, 1)["loss"]  # the mean over ranks of W x their share
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"non-finite loss ({loss_sum}) at step {step}; stopping without saving "
                                     f"(the last checkpoint in {args.out} is intact)")
        gnorm, moe = parallel.optimizer_step(model, opt, args.clip, step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.1e}")
        if step % 10 == 0 or step == args.steps:
            log({"step": step, "loss": loss_sum, "lr": lr, "grad_norm": gnorm, "time": time.time() - t0,
                 **moe})  # MoE: max/mean load and dead experts per layer of the last step
        if args.data is None and args.eval_every and step % args.eval_every == 0 and step < args.steps:
            evaluate(args.eval_tasks)
        if step % args.save_every == 0 or step == args.steps or step == args.stop_at:
            save()
        if step == args.stop_at:
            print(f"stopping at step {step} as asked (--stop_at)")
            return None
    bar.close()
    print(f"trained {step} steps in {time.time() - t0:.0f} s")
    res = evaluate(args.final_tasks, final=True) if args.data is None else None
    print(f"total time {time.time() - t_start:.0f} s; checkpoint in {ckpt}")
    return res


if __name__ == "__main__":
    cli.main(main)
