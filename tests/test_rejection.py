"""sample.py rejection sampling: keeps correct, distinct, well-formed responses that train_sft.py reads back exactly."""

import functools
import json
import os
import subprocess
import sys

import pytest
import torch

import countdown
import sample
import train_sft
from model import ModelConfig, Transformer
from checkpoint import write_jsonl
from sample import encode_ids, rejection_sample

TASK_A, TASK_B = countdown.Task((65, 18, 37), 10), countdown.Task((80, 33, 69), 22)
TRACE_A = countdown.optimal_trace(TASK_A)  # ... 28-18=10 yes\n</think>\n<answer>(65-37)-18</answer>
TRACE_B = countdown.optimal_trace(TASK_B)  # ... 33-11=22 yes\n</think>\n<answer>33-(80-69)</answer>
WRONG_A = TRACE_A.replace("<answer>(65-37)-18", "<answer>(65-37)+18")
ALT_A = TRACE_A.replace("<answer>(65-37)-18", "<answer>(65-18)-37")  # also correct, a different response
BAD_FORMAT_A = TRACE_A.replace("</think>", "<think>")  # correct answer, thinking never closed
WRONG_B = TRACE_B.replace("<answer>33-(80-69)", "<answer>33+(80-69)")


@pytest.fixture(scope="module")
def tok():
    tasks = countdown.train_tasks(300, 0)
    texts = [countdown.prompt_compact(t) + countdown.optimal_trace(t) + "<|endoftext|>" for t in tasks]
    return train_sft.train_tokenizer(texts, 128)


@pytest.fixture(autouse=True)
def prefill_per_row(monkeypatch):
    """Scripted gives identical prompts different completions, which no real model can (they get the
    same logits), so generate's prefix sharing (sample.py note 7) would merge them: off here."""
    monkeypatch.setattr(sample, "generate", functools.partial(sample.generate, share_prefix=False))


class Scripted(Transformer):
    """Scripted tokens: the rows of each prompt emit its completions (token ids) in order; no compute."""

    def __init__(self, tok, completions):
        torch.manual_seed(0)
        super().__init__(ModelConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                     inter_dim=64, max_seq_len=512))
        self.completions = {tuple(encode_ids(tok, p)): c for p, c in completions.items()}
        self.lm_head = torch.nn.Identity()  # hidden returns the prefill's logits

    def hidden(self, idx, valid=None, cache=None):
        if idx.shape[1] > 1:  # prefill: each row takes the next unused completion of its prompt
            used, self.rows, self.step = {}, [], 0
            for b in range(idx.shape[0]):
                p = tuple(idx[b][valid[b]].tolist())
                self.rows.append(self.completions[p][used.setdefault(p, 0)])
                used[p] += 1
            assert len({len(r) for r in self.rows}) == 1, "equal lengths: rows stop together, no compaction"
        return self.next_logits()[:, None]

    def next_logits(self):
        logits = torch.full((len(self.rows), self.cfg.vocab_size), float("-inf"))
        for b, row in enumerate(self.rows):
            logits[b, row[self.step]] = 0.0
        self.step += 1
        return logits

    def decoder(self):
        return lambda tok, valid, cache: self.next_logits()


def scripted(tok, texts_per_task):
    """A Scripted model whose k samples of each task are these texts, in order (each a single generate call)."""
    return Scripted(tok, {countdown.prompt_compact(t): [encode_ids(tok, x) for x in xs]
                          for t, xs in texts_per_task.items()})


def test_correct_completions_are_kept_and_wrong_ones_dropped(tok):
    m = scripted(tok, {TASK_A: [WRONG_A, TRACE_A, WRONG_A, WRONG_A], TASK_B: [WRONG_B] * 4})
    records, stats = rejection_sample(m, tok, [TASK_A, TASK_B], k=4, batch_size=4, max_per_task=None)
    assert records == [{"prompt": countdown.prompt_compact(TASK_A), "response": TRACE_A}]
    assert stats == {"tasks": 2, "samples": 8, "accepted": 1, "solved": 1}


def test_identical_responses_are_kept_once(tok):
    m = scripted(tok, {TASK_A: [TRACE_A, TRACE_A, ALT_A, TRACE_A]})
    records, stats = rejection_sample(m, tok, [TASK_A], k=4, batch_size=4, max_per_task=None)
    assert [r["response"] for r in records] == [TRACE_A, ALT_A]
    assert stats["accepted"] == 4


def test_max_per_task_keeps_the_first_accepted_responses(tok):
    m = scripted(tok, {TASK_A: [WRONG_A, ALT_A, TRACE_A, TRACE_A]})
    records, _ = rejection_sample(m, tok, [TASK_A], k=4, batch_size=4, max_per_task=1)
    assert [r["response"] for r in records] == [ALT_A]


def test_strict_format_drops_a_correct_answer_in_a_bad_format(tok):
    m = scripted(tok, {TASK_A: [BAD_FORMAT_A]})
    assert rejection_sample(m, tok, [TASK_A], k=1)[0] == []
    assert [r["response"] for r in rejection_sample(m, tok, [TASK_A], k=1, strict_format=False)[0]] == [BAD_FORMAT_A]


def test_written_records_encode_to_prompt_ids_plus_generated_ids_plus_eos(tok, tmp_path):
    eos = tok.token_to_id("<|endoftext|>")
    completions = {TASK_A: [WRONG_A, TRACE_A], TASK_B: [TRACE_B, WRONG_B]}
    records, _ = rejection_sample(scripted(tok, completions), tok, [TASK_A, TASK_B], k=2, batch_size=2)
    write_jsonl(tmp_path / "rs.jsonl", records)
    data = train_sft.encode_pairs(tok, train_sft.read_jsonl(tmp_path / "rs.jsonl"), max_len=512)
    for task, trace, (ids, n_prompt) in zip((TASK_A, TASK_B), (TRACE_A, TRACE_B), data, strict=True):
        prompt, generated = encode_ids(tok, countdown.prompt_compact(task)), encode_ids(tok, trace)
        assert generated[-1] == tok.token_to_id("</answer>")  # the stop token the model emitted, kept
        assert ids.tolist() == prompt + generated + [eos] and n_prompt == len(prompt)


def test_a_trailing_end_of_text_is_stripped_and_encode_pairs_restores_it(tok, monkeypatch):
    monkeypatch.setattr(sample, "STOP_TOKENS", ("<|endoftext|>",))  # as for a tokenizer without a </answer> token
    eos = tok.token_to_id("<|endoftext|>")
    generated = encode_ids(tok, TRACE_A) + [eos]
    m = Scripted(tok, {countdown.prompt_compact(TASK_A): [generated]})
    records, _ = rejection_sample(m, tok, [TASK_A], k=1)
    assert [r["response"] for r in records] == [TRACE_A]
    (ids, n_prompt), = train_sft.encode_pairs(tok, [(records[0]["prompt"], records[0]["response"])], max_len=512)
    assert ids.tolist()[n_prompt:] == generated


def test_cli_writes_jsonl_and_prints_a_summary(tok, tmp_path):
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=64,
                      max_seq_len=128)
    torch.manual_seed(0)
    Transformer(cfg).save_pretrained(tmp_path / "ckpt", tokenizer=tok)
    out = tmp_path / "rs.jsonl"
    r = subprocess.run([sys.executable, "sample.py", "--ckpt", str(tmp_path / "ckpt"), "--rejection", str(out),
                        "--k", "2", "--n_tasks", "3", "--max_new_tokens", "16"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # one thread: a tiny model, a busy machine
    assert r.returncode == 0, r.stderr
    assert "3 tasks, 6 samples" in r.stdout and f"written to {out}" in r.stdout
    assert out.exists() and not (tmp_path / "rs.jsonl.tmp").exists()
    for line in out.read_text().splitlines():  # a random model may accept nothing: then the file is empty
        assert set(json.loads(line)) == {"prompt", "response"}


@pytest.mark.parametrize("mode", [[], ["--prompt", "x", "--rejection", "o.jsonl"]])
def test_cli_needs_exactly_one_of_prompt_and_rejection(mode, capsys):
    with pytest.raises(SystemExit) as e:
        sample.main(["--ckpt", "none"] + mode)
    assert e.value.code != 0
    last = capsys.readouterr().err.strip()  # one line, no usage block
    assert "\n" not in last
    assert "error: " in last and "--prompt" in last and "--rejection" in last


def test_heldout_cli_reports_greedy_accuracy(tok, monkeypatch, capsys):
    t0, t1 = countdown.heldout_tasks(3, 2)
    wrong = countdown.optimal_trace(t1).replace("</answer>", "+0</answer>")  # uses a 0 it was not given
    m = scripted(tok, {t0: [countdown.optimal_trace(t0)], t1: [wrong]})
    import checkpoint
    import model

    monkeypatch.setattr(model.Transformer, "from_pretrained", classmethod(lambda cls, *a, **k: m))
    monkeypatch.setattr(checkpoint, "load_tokenizer", lambda path: tok)
    sample.main(["--ckpt", "unused", "--heldout", "2", "--n_numbers", "3", "--batch_size", "1"])
    out = capsys.readouterr().out.strip()
    assert out.startswith("held-out, 3 numbers (2 tasks): greedy accuracy 50.0% (right 1, arithmetic slip 0, "
                          "false yes 0, other 1, no answer 0); length ")  # +0: a number it was not given
    assert out.endswith("1.00 checks, P(stop | yes) 1.00, P(go on | no) n/a, wrong lines 0.0%, false yes 0.00 per response")


@pytest.mark.parametrize("flags", [["--heldout", "0"], ["--heldout", "1001"], ["--heldout", "5", "--n_numbers", "5"]])
def test_heldout_cli_rejects_bad_input_in_one_line(flags, capsys):
    with pytest.raises(SystemExit) as e:
        sample.main(["--ckpt", "none"] + flags)
    assert e.value.code != 0
    assert capsys.readouterr().err.strip().count("\n") == 0
