"""train_sft.py: response-only loss, bad data errors, and exact resume."""

import json
import subprocess
import sys

import pytest
import torch

import train_sft
from model import Transformer

TINY = ["--dim", "32", "--n_heads", "2", "--n_kv_heads", "1", "--inter_dim", "64", "--n_layers", "2",
        "--batch_size", "8", "--warmup", "2", "--n_train", "300", "--eval_every", "0", "--final_tasks", "4",
        "--max_len", "256", "--save_every", "100"]


def test_collate_masks_prompt_tokens_out_of_the_loss():
    data = [(torch.tensor([5, 6, 7, 8, 9]), 2), (torch.tensor([1, 2, 3]), 1)]
    x, y, mask = train_sft.collate(data, [0, 1], pad_id=0)
    assert x.tolist() == [[5, 6, 7, 8], [1, 2, 0, 0]]
    assert y.tolist() == [[6, 7, 8, 9], [2, 3, 0, 0]]
    # row 0: prompt 5 6; the loss is on predicting 7, 8, 9 (from inputs 6, 7, 8)
    assert mask.tolist() == [[False, True, True, True], [True, True, False, False]]


def test_tokenizer_keeps_digits_apart_and_round_trips():
    text = "36 12 7 -> 41\n<think>\n36+12=48 [48 7]\n48-7=41 yes\n</think>\n<answer>(36+12)-7</answer><|endoftext|>"
    tok = train_sft.train_tokenizer([text] * 50, 64)
    enc = tok.encode(text)
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    assert "48" not in enc.tokens and "</think>" in enc.tokens


def test_chat_messages_become_prompt_and_response():
    prompt, response = train_sft.chat_pair([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    assert prompt == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert response == "4<|im_end|>"


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n\n" + '{"prompt": "a", "respo\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: bad record"):
        train_sft.read_jsonl(f)
    f.write_text(json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: bad record \(KeyError"):
        train_sft.read_jsonl(f)


def test_cli_bad_data_is_one_line_error_and_nonzero_exit(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("not json\n")
    r = subprocess.run([sys.executable, "train_sft.py", "--data", str(f), "--init", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    train_sft.main(TINY + ["--out", str(tmp_path / "a"), "--steps", "6"])
    train_sft.main(TINY + ["--out", str(tmp_path / "b"), "--steps", "6", "--stop_at", "3"])
    half = Transformer.from_pretrained(tmp_path / "b" / "ckpt")
    train_sft.main(TINY + ["--out", str(tmp_path / "b"), "--steps", "6", "--resume"])
    a = Transformer.from_pretrained(tmp_path / "a" / "ckpt").state_dict()
    b = Transformer.from_pretrained(tmp_path / "b" / "ckpt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in half.state_dict().items())  # it did train after resuming

    def logged(run):
        return [(r.get("step"), r.get("loss")) for r in map(json.loads, open(tmp_path / run / "metrics.jsonl"))]

    assert logged("a") == logged("b") and logged("a")  # a resumed run appends; its log equals the unbroken one
    with pytest.raises(FileExistsError, match="holds a run"):  # never a silent overwrite
        train_sft.main(TINY + ["--out", str(tmp_path / "a"), "--steps", "6"])
    train_sft.main(TINY + ["--out", str(tmp_path / "a"), "--steps", "6", "--overwrite"])
    assert logged("a") == logged("b")  # --overwrite starts a fresh log


def test_moe_preset_trains_balances_and_resumes_exactly(tmp_path):
    """--moe: the routers' balancing bias moves after each step, the logs carry the expert load, and
    a killed and resumed run (bias included) equals the unbroken one."""
    moe = TINY + ["--moe", "--steps", "6", "--bias_update_speed", "0.01"]
    train_sft.main(moe + ["--out", str(tmp_path / "a")])
    train_sft.main(moe + ["--out", str(tmp_path / "b"), "--stop_at", "3"])
    train_sft.main(moe + ["--out", str(tmp_path / "b"), "--resume"])
    a = Transformer.from_pretrained(tmp_path / "a" / "ckpt")
    b = Transformer.from_pretrained(tmp_path / "b" / "ckpt").state_dict()
    assert a.cfg.n_routed_experts == 8 and a.cfg.top_k == 2 and a.cfg.first_k_dense == 1
    assert all(torch.equal(v, b[k]) for k, v in a.state_dict().items())
    bias = a.layers[1].mlp.gate.e_score_correction_bias
    assert 0 < bias.abs().max() <= 6 * 0.01 + 1e-6  # six steps of at most gamma each
    last = [r for r in map(json.loads, open(tmp_path / "a" / "metrics.jsonl")) if "loss" in r][-1]
    assert len(last["moe_max_over_mean"]) == 1 and last["moe_max_over_mean"][0] >= 1  # one MoE layer
    assert len(last["moe_dead_experts"]) == 1
