"""
Scale-out: train_sft.py and train_rl.py under torchrun, with DDP or FSDP2 (--fsdp), computing what one
process computes. Also the two steps both scripts share: the optimizer step and the checkpoint.

    torchrun --standalone --nproc_per_node=8 train_rl.py --preset qwen --init DIR          # one machine, 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train_rl.py ...

Design notes:
1. Without torchrun (no RANK in the environment) none of this runs a collective or wraps anything:
   a single process computes exactly what it computed before scale-out existed.
2. Batch flags are global. Each rank takes a disjoint share of every batch (train_sft: every W-th
   sequence of a micro-batch; train_rl: a run of whole prompt groups, so rewards and advantages stay
   local); the loss normalisers (token and sequence counts) are summed over ranks; and since DDP
   and FSDP average gradients over the W ranks, each rank scales its loss by W. The update is then
   the one-process update up to the order of float sums.
3. Every rank runs the same number of forward and backward passes, since DDP all-reduces in each
   backward and FSDP all-gathers in each forward: a rank with fewer rows runs empty micro-batches
   (no token counts, the gradient is zero).
4. Sampling calls the model a data-dependent number of times on each rank, so it runs on a plain
   module that no collective sits in (`plain`): DDP's .module, or under FSDP a full copy of the
   weights gathered once per step, which costs one model's memory, as generation needs anyway.
   Evals run the same way on every rank (the ranks would only wait otherwise); rank 0 logs them.
5. Only rank 0 writes logs, plots and checkpoints, and only it prints: the others' stdout goes to
   /dev/null (stderr stays, so their errors show). A checkpoint holds full state dicts (under FSDP
   gathered to rank 0's CPU, optimizer state included), so it is the HF directory one process
   writes. OUT must be on a file system every machine sees: the ranks read what rank 0 wrote there.
6. A rank that raises exits non-zero (cli.main) and torchrun stops the others; should a rank hang
   instead, the others' next collective raises after --dist_timeout minutes.
7. What FSDP saves here is what training adds to the weights: gradients and AdamW's two moments
   (with fp32 weights, three times their size), each process holding 1/W of them. Each process still
   holds the full weights while loading a checkpoint and while sampling (note 4), and --resume reads
   the full optimizer state on every process before sharding it.
"""

import atexit
import math
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

# DDP, FSDP and the state-dict helpers are imported where used: a build of torch without
# torch.distributed still runs one process.
RANK, WORLD = 0, 1  # this process, the number of processes: set by setup under torchrun
DEVICE = "cpu"  # where collectives run: this rank's GPU (NCCL) or the CPU (gloo)


def setup(device, timeout_min=30.0, fsdp=False):
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); return this rank's device."""
    global RANK, WORLD, DEVICE
    if "RANK" not in os.environ:
        if fsdp:
            print("note: --fsdp shards over the processes torchrun starts; this is one process, unsharded")
        return device  # one process: nothing to join, nothing to wrap (design note 1)
    if device.startswith("cuda"):
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(minutes=timeout_min))
        atexit.register(dist.destroy_process_group)
    RANK, WORLD, DEVICE = dist.get_rank(), dist.get_world_size(), device
    if RANK:
        sys.stdout = open(os.devnull, "w")  # design note 5
    return device


def wrap(model, fsdp, frozen=False):
    """DDP, or FSDP2 with each block its own shard group (the root holds embeddings, norm, lm_head).
    A frozen model (the KL reference) is sharded like the policy under FSDP, left as it is under DDP."""
    if not dist.is_initialized():
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        return fully_shard(model)
    if frozen:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[DEVICE] if DEVICE.startswith("cuda") else None)


def is_fsdp(model):
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def plain(model):
    """The model as a plain Transformer, for generate and evals (design note 4). Under FSDP every
    rank must call it at the same point: it gathers the full weights."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    if not dist.is_initialized() or not is_fsdp(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from model import Transformer

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # on every rank
    with torch.device("meta"):
        copy = Transformer(model.cfg)
    copy.load_state_dict(state, assign=True)
    if model.cfg.tie_embeddings:
        copy.lm_head.weight = copy.embed_tokens.weight
    return copy.train(model.training)


def split(n):
    """This rank's share of n items, as a range [lo, hi): contiguous, sizes differ by at most one."""
    return n * RANK // WORLD, n * (RANK + 1) // WORLD


def gathered(x):
    """x from every rank, stacked: (W, *x.shape), on x's device. One process: x[None]."""
    if not dist.is_initialized():
        return x[None]
    parts = [torch.empty_like(x, device=DEVICE) for _ in range(WORLD)]
    dist.all_gather(parts, x.to(DEVICE))
    return torch.stack(parts).to(x.device)


def means(sums, n):
    """{key: sums[key] summed over ranks / n summed over ranks}: a metric of the whole batch."""
    t = gathered(torch.tensor([*map(float, sums.values()), float(n)], dtype=torch.float64)).sum(0)
    return {k: (v / t[-1]).item() for k, v in zip(sums, t)}


def metrics_log(path, resume, keep):
    """log(record): a JSON line appended to the run's metrics file by rank 0 alone (design note 5); the
    file starts empty, or on resume keeps the rows keep(row) accepts (a killed run logs past its save)."""
    import json

    from checkpoint import trim_jsonl

    if RANK == 0 and resume:
        trim_jsonl(path, keep)
    elif RANK == 0 and os.path.exists(path):
        os.remove(path)

    def log(rec):
        if RANK == 0:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
    return log


def from_rank0(fn):
    """fn() run on rank 0 alone, its result sent to every rank (a file written once, a tokenizer
    trained once); the other ranks wait for it."""
    if not dist.is_initialized():
        return fn()
    box = [fn() if RANK == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------- shared by both scripts

def sync_grads(model, on):
    """Whether the next forward/backward reduces gradients over the ranks. Under DDP only the last
    micro-batch before an optimizer step does (the others accumulate locally, as nanoGPT does);
    FSDP reduce-scatters every micro-batch, which keeps its gradients sharded."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        model.require_backward_grad_sync = on


def optimizer_step(model, opt, clip, step):
    """Clip the gradient norm, step, zero the gradients, then the model's MoE balancing step. Returns
    the norm before clipping and the balancing's log fields ({} for a dense model). A non-finite
    norm stops the run before the step (the last checkpoint stays intact)."""
    from torch.nn.parallel import DistributedDataParallel

    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    gnorm = (gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm).item()  # FSDP: a DTensor
    if not math.isfinite(gnorm):
        raise FloatingPointError(f"non-finite gradient norm at step {step}; stopping without saving")
    opt.step()
    opt.zero_grad(set_to_none=True)
    base = model.module if isinstance(model, DistributedDataParallel) else model
    return gnorm, base.update_expert_bias(summed)


def summed(x):
    """x summed over the ranks (every rank gets the sum); one process: x."""
    if not dist.is_initialized():
        return x
    x = x.to(DEVICE)
    dist.all_reduce(x)
    return x


def share_micro_batches(n_tokens, n_seqs, chunks):
    """Under torchrun: the loss normalisers summed over the ranks, and this rank's micro-batches
    padded with empty ones ([]) to the most any rank has (design note 3). One process: as they are."""
    if not dist.is_initialized():
        return n_tokens, n_seqs, chunks
    counts = gathered(torch.tensor([n_tokens, n_seqs, len(chunks)]))  # (W, 3)
    return int(counts[:, 0].sum()), int(counts[:, 1].sum()), chunks + [[]] * (int(counts[:, 2].max()) - len(chunks))


def save(model, opt, path, tok, **train_state):
    """Rank 0 writes the checkpoint (weights, tokenizer, optimizer, train_state); every rank must
    call it, since under FSDP the full state dicts are gathered first (design note 5)."""
    from torch.nn.parallel import DistributedDataParallel

    fsdp = dist.is_initialized() and is_fsdp(model)
    weights = None  # the module's own state dict
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 gets all, the others nothing
        weights = get_model_state_dict(model, options=options)
        optim = get_optimizer_state_dict(model, opt, options=options)
    if RANK == 0:
        state = {"optimizer": optim if fsdp else opt.state_dict(), **train_state}
        if dist.is_initialized():
            state["fsdp"] = fsdp
        base = model.module if isinstance(model, DistributedDataParallel) else model
        base.save_pretrained(path, tokenizer=tok, train_state=state, state_dict=weights)


def load_optimizer(model, opt, state):
    """Restore the optimizer from a train_state saved by `save`: as is, or re-sharded under FSDP."""
    fsdp = dist.is_initialized() and is_fsdp(model)
    if state.get("fsdp", False) != fsdp:
        raise ValueError(f"the run was saved {'with' if state.get('fsdp') else 'without'} --fsdp: resume it the "
                         "same way")
    if not fsdp:
        return opt.load_state_dict(state["optimizer"])
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, state["optimizer"], options=StateDictOptions(full_state_dict=True))
