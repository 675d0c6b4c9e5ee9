"""
Batched, KV-cached sampling with s1-style budget forcing, and rejection sampling for SFT data.

Design notes:
1. Ragged prompts are left-padded into one batch; the model counts positions over valid slots
   only, so every row sees exactly what it would see alone. One prefill (model.forward), then one
   token per step (model.Decoder, built per call: on CPU it holds copies of the weights) written
   in place into a preallocated cache (model.KVCache). The prefill runs lm_head on each
   row's last position only: a 150-token prompt times Qwen's 152k-token vocabulary would otherwise
   be 90 MB of fp32 logits per row, all thrown away.
2. Finished rows (a stop id, or the length limit) stop contributing: their outputs are dropped at
   once, and once a quarter of the batch has finished the cache is compacted so later steps skip
   them. Compacting on every single finish would copy the cache's written slots up to B times.
   Which rows finished is tracked in Python lists: a step's bookkeeping is then one tolist, not a
   handful of small tensor ops (each costs microseconds; a rollout's tail runs hundreds of steps
   with a few rows, where those costs are the step).
3. Budget forcing (s1, "Simple test-time scaling"): the completion starts inside the thinking
   (the prompt ends with `<think>`). If the model closes the thinking (`think_end`, any number of
   tokens) before `min_think` tokens, or the first `n_waits` times it does (s1's extension), the
   delimiter is rolled back (its cache slots are masked out, so positions stay as if it was never
   written) and `wait_ids` ("Wait") are forced in its place. At `max_think` tokens the delimiter and `answer_prefix` are forced and the model
   answers. Forced tokens are part of the returned completion.
4. A row's length budget counts steps, rolled-back tokens included, so a row never runs past
   `max_new_tokens` steps and the cache never overflows.
5. Stop tokens are kept at the end of the completion: RL must learn to emit them too.
6. Random draws belong to (row, step), not to the cache layout: each step draws one uniform for
   every row of the whole batch, even finished ones, and a row takes its own. A row's sample is then
   a function of the seed, its index and its own tokens, whatever other rows do; with `row0` and
   `n_rows` a process that samples rows row0.. of a batch of n_rows (train_rl.py under torchrun,
   parallel.py) gets exactly the draws those rows get when one process samples them all.
7. Prefix sharing: GRPO samples G completions of a prompt, passed as G identical prompts in a
   row. Each run of identical consecutive prompts is prefilled once and its cache rows copied to the
   run's rows (KVCache.select_rows), so the prefill costs the distinct prompts, not all B rows.
   Detected, not declared: no caller can get it wrong; equal prompts that are not neighbours are
   merely prefilled twice. Rows get the tokens a prefill per row gives (tests/test_sample.py).
8. Rejection sampling (R1 stage 3): k samples per training task, kept when correct and (by
   default) in the strict think/answer format; one distinct response per task unless asked for
   more. A kept response is the decoded completion minus a trailing end-of-text, which
   train_sft.encode_pairs appends back, so it re-encodes to the generated ids, unless the model
   sampled a segmentation the tokenizer would not produce (SFT then trains on the tokenizer's own).
"""

import os
import sys

import torch

import cli


def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None, u=None):
    """Next token per row from logits (B, V): greedy at temperature 0, else top-k / top-p sampling
    (u: the (B, 1) uniforms to sample with; None draws them from generator)."""
    if temperature < 1e-6:  # 0 is greedy; below 1e-6, logits / temperature could overflow to inf
        return logits.argmax(-1)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature  # (x / 1.0 is x)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:  # nucleus: keep the smallest set of tokens whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # inverse-CDF sampling: one uniform per row (torch.multinomial draws one exponential per vocab entry)
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device, generator=generator) if u is None else u
    u = u * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=cdf.shape[-1] - 1)


def pad(rows, left=False, pad_id=0, width=None):
    """A ragged batch as one tensor: token-id lists (or 1-D tensors) padded to width (default the
    longest), on the left or the right -> idx (B, width) long, valid (B, width) bool (model.py note 3)."""
    width = max(map(len, rows)) if width is None else width
    idx = torch.full((len(rows), width), pad_id, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        if len(r):
            idx[b, cols], valid[b, cols] = torch.as_tensor(r), True
    return idx, valid


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, stop_ids=(), seed=None,
             pad_id=0, think_end=None, min_think=0, max_think=None, wait_ids=(), answer_prefix=(), row0=0, n_rows=None,
             share_prefix=True, n_waits=0):
    """Sample a completion for each prompt.

    Args:
        prompts: list of token-id lists, any lengths.
        stop_ids: a row stops after emitting any of these (kept in its completion).
        seed: seeds a private generator, so the same call gives the same samples.
        think_end: token ids closing the thinking (e.g. `</think>`); enables budget forcing.
        min_think / max_think: thinking budget in tokens (s1); wait_ids replace an early think_end,
            answer_prefix follows a forced think_end.
        n_waits: s1's extension: the first n_waits times a row closes its thinking, wait_ids replace it.
        row0, n_rows: these prompts are rows row0 .. row0 + len(prompts) - 1 of a batch of n_rows
            (default: the whole batch), for the random draws (design note 6).
        share_prefix: prefill each run of identical consecutive prompts once (design note 7).
    Returns:
        list of completions (token-id lists), one per prompt.
    """
    B, cfg = len(prompts), model.cfg
    if B == 0:
        return []
    P = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("empty prompt: every prompt needs at least one token")
    if P >= cfg.max_seq_len:
        raise ValueError(f"prompt of {P} tokens does not fit the model's context of {cfg.max_seq_len} tokens")
    max_new_tokens = min(max_new_tokens, cfg.max_seq_len - P)  # rows also stop at the context limit
    forcing = think_end is not None and (min_think > 0 or max_think is not None or n_waits > 0)
    if forcing and (min_think > 0 or n_waits > 0) and not wait_ids:
        raise ValueError("min_think and n_waits need wait_ids, the tokens forced in place of a think_end")
    device = model.embed_tokens.weight.device
    gen = torch.Generator(device).manual_seed(seed) if seed is not None else None
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)

    new_run = [b == 0 or not share_prefix or prompts[b] != prompts[b - 1] for b in range(B)]  # (note 7)
    distinct = [p for p, new in zip(prompts, new_run) if new]
    idx, valid = pad(distinct, left=True, pad_id=pad_id)
    cache = model.new_cache(B, P + max_new_tokens, len(distinct))  # memory for B rows, distinct ones in use
    hidden = model.hidden(idx.to(device), valid.to(device), cache)[:, -1]
    logits = model.lm_head(hidden)  # the last position only (note 1)
    if len(distinct) < B:  # copy each run's cache row and logits to all its prompts
        run = (torch.tensor(new_run).cumsum(0) - 1).to(device)  # (B,) the run of each prompt
        cache.select_rows(run)
        logits = logits[run]

    out = [[] for _ in range(B)]
    rows = list(range(B))  # original index of each cache row
    n_rows = B if n_rows is None else n_rows
    if row0 < 0 or row0 + B > n_rows:
        raise ValueError(f"rows {row0}..{row0 + B - 1} are not rows of a batch of {n_rows}")
    draw = torch.arange(row0, row0 + B, device=device)  # each cache row's index in the whole batch (design note 6)
    live = [True] * B  # cache rows still generating
    stop = set(stop_ids)
    force = BudgetForcing(B, think_end, min_think, max_think, wait_ids, answer_prefix, n_waits) if forcing else None
    decode = model.decoder()  # the decode step, built for this call (model.Decoder)
    for step in range(max_new_tokens):
        u = torch.rand(n_rows, 1, device=device, generator=gen)[draw]  # (rows in cache, 1)
        nxt = sample_next(logits, temperature, top_k, top_p, u=u)
        if force:
            nxt = force(nxt, rows, live, out, cache, slot=P + step)
        for i, (r, t) in enumerate(zip(rows, nxt.tolist())):
            if live[i]:
                out[r].append(t)
                live[i] = t not in stop
        n_live = sum(live)
        if n_live == 0 or step == max_new_tokens - 1:
            break
        if n_live <= 0.75 * len(rows):  # compact: finished rows stop costing compute
            keep = [i for i, alive in enumerate(live) if alive]
            idx = torch.tensor(keep, device=device)
            cache.select_rows(idx)
            rows, draw, nxt, live = [rows[i] for i in keep], draw[idx], nxt[idx], [True] * n_live
        logits = decode(nxt, torch.tensor(live, device=device), cache)
    return out


class BudgetForcing:
    """s1 budget forcing for one generate call (design note 3), with the state it keeps per row:
    the cache slot of each completion token (to roll a delimiter back), whether the row is still
    thinking, and the tokens queued to be forced in the next steps."""

    def __init__(self, n_rows, think_end, min_think, max_think, wait_ids, answer_prefix, n_waits=0):
        self.think_end, self.min_think, self.max_think, self.n_waits = list(think_end), min_think, max_think, n_waits
        self.waits = [0] * n_rows  # "Wait"s forced so far
        self.wait_ids, self.answer_prefix = list(wait_ids), list(answer_prefix)
        self.slots = [[] for _ in range(n_rows)]
        self.thinking = [True] * n_rows
        self.queue = [[] for _ in range(n_rows)]

    def __call__(self, nxt, rows, live, out, cache, slot):
        """This step's tokens (one per cache row; rows[i] is cache row i's prompt, out its completion
        so far, slot the cache slot they go to) with forcing applied: returns the tokens to feed."""
        nxt, n = nxt.tolist(), len(self.think_end)
        for i, r in enumerate(rows):
            if not live[i]:
                continue
            if self.queue[r]:
                nxt[i] = self.queue[r].pop(0)
            if not self.thinking[r]:
                continue
            seq = out[r] + [nxt[i]]
            if seq[-n:] == self.think_end:
                if len(seq) - n < self.min_think or self.waits[r] < self.n_waits:  # roll it back, say "Wait"
                    self.waits[r] += 1
                    for s in self.slots[r][len(seq) - n :]:
                        cache.valid[i, s] = False
                        cache.n_valid[i] -= 1
                    del out[r][len(seq) - n :], self.slots[r][len(seq) - n :]
                    nxt[i], self.queue[r] = self.wait_ids[0], self.wait_ids[1:]
                else:
                    self.thinking[r] = False
            elif self.max_think is not None and len(seq) >= self.max_think and not self.queue[r]:
                self.queue[r] = self.think_end + self.answer_prefix  # out of budget: close the thinking, answer
                self.thinking[r] = False
            self.slots[r].append(slot)
        return torch.tensor(nxt, device=cache.valid.device)


# ------------------------------------------------------------------------------------- Countdown

def heldout_eval(model, tok, n_tasks, rules="sos", template="compact", max_new_tokens=512, sizes=(3, 4),
                 n_samples=0, sample_tasks=None, temperature=1.0, seed=12345, batch_size=256, sets=None):
    """The held-out evaluation every script runs, on the fixed sets of countdown.heldout_tasks (or
    on `sets`, {name: tasks}, whose keys then end in the name instead of the size: lab.py).

    Greedy on the first n_tasks of each size: accuracy, how the wrong answers fail
    (trace_reader.failure_kind) and what the search does (trace_reader.behaviour_rates). With
    n_samples > 0, n_samples samples at `temperature` on the first sample_tasks (default all) of them:
    accuracy, pass@n_samples, length in tokens, and the same behaviour. Returns one flat dict, each key
    ending in the size: eval_acc3, no_answer3, greedy_checks3, ...; sample_acc3, pass@8_3, length3,
    checks3, ... (what train_rl.py logs and report.py reads).
    """
    import countdown
    import trace_reader

    res = {}
    for k, tasks in (sets or {k: countdown.heldout_tasks(k, n_tasks, rules) for k in sizes}).items():
        texts = sample_countdown(model, tok, tasks, template, max_new_tokens, batch_size)
        kinds = [trace_reader.failure_kind(t, x) for t, x in zip(tasks, texts)]  # "right": rewards.countdown_correct
        res[f"eval_acc{k}"] = kinds.count("right") / len(tasks)
        res.update({f"{kind.replace(' ', '_')}{k}": kinds.count(kind) for kind in trace_reader.FAILURE_KINDS[1:]})
        res[f"greedy_length{k}"] = sum(len(encode_ids(tok, x)) for x in texts) / len(texts)
        res.update({f"greedy_{key}{k}": v for key, v in trace_reader.behaviour_rates(tasks, texts).items()})
        if n_samples:
            tasks = tasks[:sample_tasks]
            texts = sample_countdown(model, tok, tasks, template, max_new_tokens, batch_size, temperature, n_samples,
                                     seed)
            right = [trace_reader.failure_kind(t, x) == "right" for t, x in zip(repeat(tasks, n_samples), texts)]
            res[f"sample_acc{k}"] = sum(right) / len(right)
            res[f"pass@{n_samples}_{k}"] = sum(any(right[j * n_samples : (j + 1) * n_samples])
                                               for j in range(len(tasks))) / len(tasks)
            res[f"length{k}"] = sum(len(encode_ids(tok, x)) for x in texts) / len(texts)
            res.update({f"{key}{k}": v for key, v in trace_reader.behaviour_rates(repeat(tasks, n_samples), texts).items()})
    return res


def repeat(tasks, n):
    """Each task n times in a row: the order of sample_countdown's n samples per task."""
    return [t for t in tasks for _ in range(n)]


def sample_countdown(model, tok, tasks, template="compact", max_new_tokens=512, batch_size=256, temperature=0.0,
                     n_samples=1, seed=0):
    """n_samples decoded completions per task (task-major), sampled in eval mode, batch_size prompts at a time."""
    from countdown import TEMPLATES

    prompts = [encode_ids(tok, TEMPLATES[template](t)) for t in repeat(tasks, n_samples)]
    warn_unk(tok, prompts[::n_samples], f"the {template} template")
    texts = []
    was_training = model.training
    model.eval()
    for i in range(0, len(prompts), batch_size):
        outs = generate(model, prompts[i : i + batch_size], max_new_tokens, temperature=temperature,
                        stop_ids=stop_ids_for(tok), seed=seed + i)
        texts += [tok.decode(o, skip_special_tokens=False) for o in outs]
    model.train(was_training)
    return texts


END_TOKENS = ("<|endoftext|>", "<|im_end|>")  # stripped from a kept response; train_sft appends its eos


def rejection_sample(model, tok, tasks, k, template="compact", max_new_tokens=384, temperature=1.0, seed=0,
                     batch_size=256, max_per_task=1, strict_format=True):
    """R1 stage 3: sample k completions per task and keep those the reward accepts, as SFT records.

    A completion is accepted when it is correct (rewards.countdown_correct) and, with strict_format,
    "<think>" + it has the strict think/answer format (the prompt ends with "<think>"). A trailing
    end-of-text is stripped, since train_sft.encode_pairs appends its own; "</answer>" stays. Each
    task keeps its first max_per_task distinct accepted responses (None: all of them).

    Returns:
        (records, stats): records [{"prompt", "response"}] for train_sft.py; stats the number of
        tasks, samples, accepted samples (duplicates included) and tasks with one accepted or more.
    """
    from countdown import TEMPLATES
    from rewards import countdown_correct, format_reward

    texts = sample_countdown(model, tok, tasks, template, max_new_tokens, batch_size, temperature, k, seed)
    records, n_accepted, n_solved = [], 0, 0
    for j, task in enumerate(tasks):
        kept = []
        for text in texts[j * k : (j + 1) * k]:
            for end in END_TOKENS:
                if text.endswith(end):
                    text = text[: -len(end)]
                    break
            ok = countdown_correct(text, list(task.numbers), task.target)
            if ok and strict_format:
                ok = format_reward("<think>" + text, strict=True) == 1.0
            n_accepted += ok
            if ok and text not in kept and (max_per_task is None or len(kept) < max_per_task):
                kept.append(text)
        n_solved += bool(kept)
        records += [{"prompt": TEMPLATES[template](task), "response": r} for r in kept]
    stats = {"tasks": len(tasks), "samples": len(texts), "accepted": n_accepted, "solved": n_solved}
    return records, stats


# ------------------------------------------------------------------------------------------- CLI

STOP_TOKENS = ("<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|eos|>", "</answer>")


def stop_ids_for(tok):
    return [i for i in (tok.token_to_id(s) for s in STOP_TOKENS) if i is not None]


def encode_ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def warn_unk(tok, prompts, what):
    """Say (on stderr) how many prompt tokens are <unk>: text this tokenizer cannot spell, which the
    model then reads as one unknown token (a prompt template the tokenizer was not trained for)."""
    unk = tok.token_to_id("<unk>")
    n = sum(p.count(unk) for p in prompts) if unk is not None else 0
    if n:
        print(f"warning: {n} tokens of {what} are <unk>: the tokenizer cannot spell some of their characters",
              file=sys.stderr)


def get_args(argv=None):
    from countdown import HELDOUT_MAX

    ap = cli.Parser("Sample from a checkpoint (ours or a local HF directory).")
    ap.add_argument("--ckpt", required=True, help="checkpoint directory with config.json, weights, tokenizer.json")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    mode.add_argument("--rejection", metavar="OUT.jsonl", help="rejection-sample Countdown SFT data into this file")
    mode.add_argument("--heldout", type=cli.ranged(int, 1, HELDOUT_MAX), metavar="N",
                      help="greedy accuracy on the first N held-out tasks per size")
    ap.add_argument("--n", type=cli.COUNT, default=1, help="samples per prompt")
    ap.add_argument("--max_new_tokens", type=cli.COUNT, default=None, help="default 256 (--prompt), 384 (otherwise)")
    ap.add_argument("--temperature", type=cli.NONNEG, default=1.0, help="0 for greedy")
    ap.add_argument("--top_k", type=cli.COUNT0, default=0, help="0: no top-k")
    ap.add_argument("--top_p", type=cli.TOP_P, default=1.0)
    ap.add_argument("--seed", type=cli.COUNT0, default=0)
    ap.add_argument("--min_think", type=cli.COUNT0, default=0, help="s1: force 'Wait' if thinking closes earlier")
    ap.add_argument("--max_think", type=cli.COUNT, default=None, help="s1: force '</think>' after this many tokens")
    ap.add_argument("--think_end", default="</think>")
    ap.add_argument("--wait", default="\nWait,")
    ap.add_argument("--answer_prefix", default="\n<answer>")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=cli.device)
    # Countdown modes: rejection sampling (R1 stage 3) and held-out accuracy
    ap.add_argument("--k", type=cli.COUNT, default=8, help="--rejection: samples per task")
    ap.add_argument("--n_tasks", type=cli.COUNT, default=2000, help="--rejection: training tasks (never held-out ones)")
    ap.add_argument("--template", default="compact", choices=["compact", "base", "chat"])
    ap.add_argument("--rules", default="sos", choices=["sos", "any"], help="Countdown task distribution")
    ap.add_argument("--n_numbers", type=cli.sizes, default="3,4", help="numbers per task, e.g. 3 or 3,4")
    ap.add_argument("--max_per_task", type=cli.COUNT0, default=1, help="distinct accepted responses kept per task (0: all)")
    ap.add_argument("--lenient_format", action="store_true", help="accept correct answers in any format")
    ap.add_argument("--batch_size", type=cli.COUNT, default=256, help="prompts per generate call (--rejection, --heldout)")
    args = ap.parse_args(argv)
    if args.heldout is not None and set(args.n_numbers) - {3, 4}:
        ap.error(f"--n_numbers {','.join(map(str, args.n_numbers))}: held-out sets exist for 3 and 4 numbers")
    if args.prompt is not None and (args.min_think or args.max_think) and not (args.think_end and args.wait):
        ap.error("budget forcing (--min_think, --max_think) needs a non-empty --think_end and --wait")
    if args.prompt is not None and not all(args.prompt):
        ap.error("--prompt: an empty prompt gives the model nothing to continue")
    if args.rejection:
        out_dir = os.path.dirname(os.path.abspath(args.rejection))
        if os.path.isdir(args.rejection) or not os.path.isdir(out_dir):
            ap.error(f"--rejection {args.rejection}: not a file in an existing directory")
    if args.max_new_tokens is None:
        args.max_new_tokens = 256 if args.prompt is not None else 384
    return args


def load(args):
    """The checkpoint's model and tokenizer, checked to belong together."""
    from checkpoint import check_tokenizer, load_tokenizer
    from model import Transformer

    model = Transformer.from_pretrained(args.ckpt, dtype=getattr(torch, args.dtype) if args.dtype else None,
                                       device=args.device)
    tok = load_tokenizer(args.ckpt)
    check_tokenizer(tok, model, args.ckpt)
    return model, tok


def main(argv=None):
    args = get_args(argv)
    if args.rejection:
        return rejection_main(args)
    if args.heldout is not None:
        return heldout_main(args)
    model, tok = load(args)
    prompts = [encode_ids(tok, p) for p in args.prompt for _ in range(args.n)]
    warn_unk(tok, prompts, "the prompts")
    outs = generate(model, prompts, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                    stop_ids_for(tok), args.seed, think_end=encode_ids(tok, args.think_end),
                    min_think=args.min_think, max_think=args.max_think, wait_ids=encode_ids(tok, args.wait),
                    answer_prefix=encode_ids(tok, args.answer_prefix))
    for p, o in zip(prompts, outs):
        print(tok.decode(p, skip_special_tokens=False) + tok.decode(o, skip_special_tokens=False))
        print("-" * 80)


def heldout_main(args):
    """--heldout N: heldout_eval on the first N fixed held-out tasks per size (the sets train_sft and
    train_rl report), printed: greedy accuracy, how the wrong answers fail and what the search does;
    with --n > 1, the same for n samples per task at --temperature."""
    import trace_reader

    def describe(res, prefix, k):
        get = lambda key: res[f"{prefix}{key}{k}"]  # noqa: E731
        p = {key: "n/a" if get(key) is None else f"{get(key):.2f}" for key in ("p_stop_yes", "p_go_no")}
        return (f"length {get('length'):.0f} tokens, {get('checks'):.2f} checks, P(stop | yes) {p['p_stop_yes']}, "
                f"P(go on | no) {p['p_go_no']}, wrong lines {get('wrong_lines'):.1%}, "
                f"false yes {get('false_yes'):.2f} per response")

    model, tok = load(args)
    res = heldout_eval(model, tok, args.heldout, args.rules, args.template, args.max_new_tokens, args.n_numbers,
                       args.n if args.n > 1 else 0, temperature=args.temperature, seed=args.seed, batch_size=args.batch_size)
    for k in args.n_numbers:
        acc = res[f"eval_acc{k}"]
        kinds = [f"right {round(acc * args.heldout)}"] + [f"{kind} {res[kind.replace(' ', '_') + str(k)]}"
                                                           for kind in trace_reader.FAILURE_KINDS[1:]]
        print(f"held-out, {k} numbers ({args.heldout} tasks): greedy accuracy {acc:.1%} (" + ", ".join(kinds) + "); "
              + describe(res, "greedy_", k))
        if args.n > 1:
            print(f"  {args.n} samples per task at T={args.temperature:g}: accuracy {res[f'sample_acc{k}']:.1%}, "
                  f"pass@{args.n} {res[f'pass@{args.n}_{k}']:.1%}; " + describe(res, "", k))


def rejection_main(args):
    """--rejection: sample --k per training task, keep the accepted ones, write JSONL atomically."""
    import checkpoint
    import countdown

    model, tok = load(args)
    tasks = countdown.train_tasks(args.n_tasks, args.seed, args.n_numbers, args.rules)
    records, stats = rejection_sample(model, tok, tasks, args.k, args.template, args.max_new_tokens, args.temperature,
                                      args.seed, args.batch_size, args.max_per_task or None,
                                      strict_format=not args.lenient_format)
    checkpoint.write_jsonl(args.rejection, records)
    print(f"rejection sampling: {stats['tasks']} tasks, {stats['samples']} samples, {stats['accepted']} accepted "
          f"({stats['accepted'] / max(1, stats['samples']):.1%}), {stats['solved']} tasks with one accepted or more; "
          f"{len(records)} records written to {args.rejection}")


if __name__ == "__main__":
    cli.main(main)
