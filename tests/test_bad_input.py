"""Bad input to the three CLIs: a one-line error and a non-zero exit before any compute, nothing lost.

Each class of bad input has a test that runs the CLI's entry point (`cli.main`, as `python x.py`
does) and asserts the exit code and the message; the save-kill test interrupts a checkpoint save
between its two moves and resumes."""

import json
import os
import random

import pytest
import torch
from safetensors.torch import save_file

import checkpoint
import cli
import countdown
import model as model_py
import sample
import train_rl
import train_sft
from model import ModelConfig, Transformer

SCRIPTS = {"train_sft": train_sft.main, "train_rl": train_rl.main, "sample": sample.main}


def run(script, argv, capsys):
    """(exit code, stderr) of `python script.py argv`; the stderr must be one line."""
    with pytest.raises(SystemExit) as e:
        cli.main(SCRIPTS[script], [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return e.value.code, err


def test_bad_input_is_one_line_but_a_bug_shows_its_traceback(capsys):
    """cli.main: an error raised on purpose about input (ValueError, OSError, ...) is one line and exit
    1; any other exception, e.g. from an edit of the code, propagates with its traceback."""
    def bad_input(argv):
        raise ValueError("--lr -1: expected a positive number")

    def bug(argv):
        return [][0]

    with pytest.raises(SystemExit) as e:
        cli.main(bad_input, [])
    assert e.value.code == 1 and capsys.readouterr().err.strip() == "error: --lr -1: expected a positive number"
    with pytest.raises(IndexError):
        cli.main(bug, [])
    with pytest.raises(ValueError):  # --debug: the traceback of bad input too
        cli.main(bad_input, ["--debug"])


def tiny_checkpoint(path, vocab_extra=0):
    """A random tiny model with a Countdown tokenizer, saved as a checkpoint directory."""
    rng = random.Random(0)
    tasks = countdown.train_tasks(100, 0)
    tok = train_sft.train_tokenizer([countdown.prompt_compact(t) + countdown.guess_trace(t, rng) for t in tasks], 96)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size() + vocab_extra, dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      inter_dim=64, max_seq_len=256)
    Transformer(cfg).save_pretrained(path, tokenizer=tok)
    return tok


# ------------------------------------------------------------------------------------------ flags

BAD_FLAGS = [
    ("train_sft", ["--lr", "-1"], "--lr"), ("train_sft", ["--lr", "nan"], "--lr"), ("train_sft", ["--steps", "0"], "--steps"),
    ("train_sft", ["--batch_size", "x"], "--batch_size"), ("train_sft", ["--min_lr_ratio", "1.5"], "--min_lr_ratio"),
    ("train_sft", ["--warmup", "-5"], "--warmup"), ("train_sft", ["--dim", "100"], "--dim"),
    ("train_sft", ["--n_kv_heads", "3"], "--n_kv_heads"), ("train_sft", ["--final_tasks", "5000"], "--final_tasks"),
    ("train_sft", ["--device", "cuda:7"], "--device"), ("train_sft", ["--resume", "--overwrite"], "--resume"),
    ("train_sft", ["--data", "x.jsonl"], "--init"),
    ("train_rl", ["--group_size", "1"], "--group_size"), ("train_rl", ["--temperature", "0"], "--temperature"),
    ("train_rl", ["--top_p", "0"], "--top_p"), ("train_rl", ["--eps_low", "1.5"], "--eps_low"),
    ("train_rl", ["--beta", "-0.1"], "--beta"), ("train_rl", ["--n_numbers", "1"], "--n_numbers"),
    ("train_rl", ["--n_numbers", "3,x"], "--n_numbers"), ("train_rl", ["--pass_k_tasks", "600"], "--pass_k_tasks"),
    ("train_rl", ["--pool", "4", "--prompts_per_step", "8"], "--pool"), ("train_rl", ["--format_score", "2"], "--format_score"),
    ("train_rl", ["--overlong", "600"], "--overlong"), ("train_rl", ["--micro_batch", "0"], "--micro_batch"),
    ("train_rl", ["--lr", "inf"], "--lr"), ("train_rl", ["--preset", "nope"], "--preset"),
    ("sample", ["--prompt", "x", "--temperature", "-1"], "--temperature"), ("sample", ["--prompt", "x", "--top_k", "-1"], "--top_k"),
    ("sample", ["--heldout", "0"], "--heldout"), ("sample", ["--heldout", "5", "--n_numbers", "5"], "--n_numbers"),
    ("sample", ["--prompt", ""], "--prompt"), ("sample", ["--prompt", "x", "--min_think", "5", "--wait", ""], "--wait"),
    ("sample", ["--rejection", "/no/such/dir/x.jsonl"], "--rejection"), ("sample", [], "--prompt"),
    ("train_sft", ["--threads", "100000"], "--threads"),  # tokenizers' thread pool crashed (segfault)
    ("train_sft", ["--max_len", "100000"], "--max_len"),
]


@pytest.mark.parametrize("script,flags,name", BAD_FLAGS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_bad_flag_is_one_line_naming_it_before_any_compute(script, flags, name, capsys, tmp_path):
    argv = flags + ([] if script != "sample" else ["--ckpt", tmp_path / "never_read"])
    code, err = run(script, argv, capsys)
    assert code == 2 and err.startswith("error: ") and name in err, err


# ------------------------------------------------------------------------------------------ files

def test_checkpoint_that_is_not_a_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run("sample", ["--ckpt", tmp_path / "file", "--prompt", "1"], capsys)
    assert code == 1 and "file: not a directory" in err


@pytest.mark.parametrize("content,message", [
    (b"[1, 2]", "expected a JSON object, got list"), (b"{", "not valid JSON"), (b"\xff\xfe{}", "not valid JSON"),
    (b'{"model_type": "qwen2", "hidden_size": "abc"}', "config.json"),
    (b'{"model_type": "qwen2", "vocab_size": 10, "hidden_size": 32, "num_hidden_layers": 1, '
     b'"num_attention_heads": 0, "intermediate_size": 8}', "n_heads must be a positive integer"),
])
def test_bad_config_json_names_the_file(tmp_path, capsys, content, message):
    tiny_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_bytes(content)
    code, err = run("sample", ["--ckpt", tmp_path / "ck", "--prompt", "1"], capsys)
    assert code == 1 and message in err and ("config.json" in err or "ck" in err), err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan"])
def test_broken_weights_are_refused(tmp_path, capsys, damage):
    tiny_checkpoint(tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "garbage":
        f.write_bytes(b"not a safetensors file at all")
    else:
        from safetensors.torch import load_file

        tensors = load_file(f)
        tensors["model.norm.weight"][0] = float("nan")
        save_file(tensors, f)
    code, err = run("sample", ["--ckpt", tmp_path / "ck", "--prompt", "1"], capsys)
    assert code == 1 and ("model.safetensors" in err or "NaN" in err), err
    code, err = run("train_rl", ["--init", tmp_path / "ck", "--out", tmp_path / "rl", "--steps", "1"], capsys)
    assert code == 1 and ("safetensors" in err or "NaN" in err), err
    assert not (tmp_path / "rl" / "ckpt").exists()  # nothing trained, nothing saved


def test_tokenizer_that_does_not_fit_the_model(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    small = Transformer(ModelConfig(vocab_size=20, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=64))
    small.save_pretrained(tmp_path / "small")
    (tmp_path / "small" / "tokenizer.json").write_bytes((tmp_path / "ck" / "tokenizer.json").read_bytes())
    code, err = run("sample", ["--ckpt", tmp_path / "small", "--prompt", "1"], capsys)
    assert code == 1 and f"{cfg['vocab_size']} tokens" in err and "vocabulary of 20" in err, err


def test_unreadable_tokenizer_names_the_file(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    code, err = run("sample", ["--ckpt", tmp_path / "ck", "--prompt", "1"], capsys)
    assert code == 1 and "tokenizer.json: not a readable tokenizer" in err


def test_prompt_the_tokenizer_cannot_spell_is_warned_with_the_count(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    sample.main(["--ckpt", str(tmp_path / "ck"), "--prompt", "12 ☃☃ 7", "--max_new_tokens", "2"])
    assert "warning: 2 tokens of the prompts are <unk>" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (b'{"prompt": "a", "response": "b"}\n\xff\xfe\n', "bad.jsonl:2: not UTF-8"),
    (b'[1, 2]\n', "bad.jsonl:1: bad record (TypeError: expected a JSON object"),
    (b'{"prompt": 3, "response": "b"}\n', "bad.jsonl:1: bad record"),
    (b'', "bad.jsonl: no records"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, capsys, content, message):
    tiny_checkpoint(tmp_path / "ck")
    (tmp_path / "bad.jsonl").write_bytes(content)
    code, err = run("train_sft", ["--data", tmp_path / "bad.jsonl", "--init", tmp_path / "ck", "--out", tmp_path / "o"],
                    capsys)
    assert code == 1 and message in err, err


def test_jsonl_that_is_a_directory(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    code, err = run("train_sft", ["--data", tmp_path, "--init", tmp_path / "ck", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "is a directory" in err


def test_empty_prompt_keeps_every_response_token_but_the_first_in_the_loss():
    data = [(torch.tensor([5, 6, 7, 8]), 0), (torch.tensor([1, 2, 3, 4]), 2)]
    _, _, mask = train_sft.collate(data, [0, 1])
    assert mask.tolist() == [[True, True, True], [False, True, True]]  # was [[False, False, True], ...]


def test_impossible_task_request_is_an_error_not_a_hang(tmp_path, capsys):
    with pytest.raises(ValueError, match="found only .* distinct solvable"):
        countdown.train_tasks(20_000, 1, (2,))  # about 6,800 distinct 2-number tasks exist


# ------------------------------------------------------------------------------------------ runs

RL = ["--steps", "2", "--prompts_per_step", "2", "--group_size", "2", "--max_new_tokens", "24", "--eval_tasks", "2",
      "--pass_k_tasks", "0", "--eval_every", "100", "--save_every", "1", "--pool", "20", "--lr", "1e-2"]


@pytest.mark.parametrize("script", ["train_sft", "train_rl"])
def test_empty_output_directory_name_is_refused(script, capsys, tmp_path):
    code, err = run(script, ["--out", " ", "--init", tmp_path / "never_read"], capsys)
    assert code == 1 and err == "error: --out is empty: name an output directory"


def test_output_directory_with_a_run_is_never_silently_overwritten(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    train_rl.main(RL + ["--init", str(tmp_path / "ck"), "--out", str(tmp_path / "rl"), "--steps", "1"])
    before = (tmp_path / "rl" / "metrics.jsonl").read_text()
    code, err = run("train_rl", RL + ["--init", tmp_path / "ck", "--out", tmp_path / "rl"], capsys)
    assert code == 1 and "holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "rl" / "metrics.jsonl").read_text() == before
    code, err = run("train_rl", RL + ["--out", tmp_path / "empty", "--resume"], capsys)
    assert code == 1 and "no run to continue" in err


def test_changed_kl_reference_is_refused_on_resume(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ck")
    train_rl.main(RL + ["--init", str(tmp_path / "ck"), "--out", str(tmp_path / "rl"), "--stop_at", "1"])
    other = Transformer.from_pretrained(tmp_path / "ck")
    with torch.no_grad():
        other.norm.weight.add_(1.0)
    other.save_pretrained(tmp_path / "ck", tokenizer=model_py.load_tokenizer(tmp_path / "ck"))
    code, err = run("train_rl", RL + ["--out", tmp_path / "rl", "--resume"], capsys)
    assert code == 1 and "KL reference has changed" in err


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, capsys, monkeypatch):
    tiny_checkpoint(tmp_path / "ck")
    real = train_rl.policy_loss

    def nan_loss(*a, **k):
        loss, m = real(*a, **k)
        return loss * float("nan"), m

    monkeypatch.setattr(train_rl, "policy_loss", nan_loss)
    code, err = run("train_rl", RL + ["--init", tmp_path / "ck", "--out", tmp_path / "rl", "--keep_equal"], capsys)
    assert code == 1 and "non-finite loss at step 0" in err
    assert not (tmp_path / "rl" / "ckpt").exists()


@pytest.mark.parametrize("script", ["train_rl", "train_sft"])
def test_a_kill_between_the_two_moves_of_a_save_resumes_to_the_same_weights(tmp_path, script, monkeypatch):
    """The save at step 2 dies after moving ckpt to ckpt.old and before moving ckpt.tmp to ckpt (as a
    kill -9 there would leave it); --resume loads ckpt.old (step 1) and ends where an unbroken run does."""
    tiny_checkpoint(tmp_path / "ck")
    if script == "train_rl":
        argv = RL + ["--init", str(tmp_path / "ck"), "--steps", "3"]
        main = train_rl.main
    else:
        (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": f"{i} 7 -> ", "response": f"{i + 7}"}) + "\n"
                                                  for i in range(40)))
        argv = ["--data", str(tmp_path / "d.jsonl"), "--init", str(tmp_path / "ck"), "--steps", "3", "--batch_size", "8",
                "--save_every", "1", "--warmup", "1"]
        main = train_sft.main
    main(argv + ["--out", str(tmp_path / "a")])

    real_rename, calls = os.rename, []

    class Killed(BaseException):  # not an Exception: nothing in the scripts may catch it
        pass

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # step 1's save: ckpt.tmp -> ckpt; step 2's: ckpt -> ckpt.old, then (killed) ckpt.tmp -> ckpt
            raise Killed
        return real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)  # save_pretrained is checkpoint.save
    with pytest.raises(Killed):
        main(argv + ["--out", str(tmp_path / "b")])
    monkeypatch.setattr(checkpoint.os, "rename", real_rename)
    b = tmp_path / "b"
    assert not (b / "ckpt").exists() and (b / "ckpt.old").is_dir() and (b / "ckpt.tmp").is_dir()
    main(argv + ["--out", str(b), "--resume"])
    sa = Transformer.from_pretrained(tmp_path / "a" / "ckpt").state_dict()
    sb = Transformer.from_pretrained(b / "ckpt").state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = lambda d: [r.get("step") for r in map(json.loads, open(d / "metrics.jsonl"))]  # noqa: E731
    assert rows(tmp_path / "a") == rows(b)  # no rows logged twice
