"""The shared argument checks (saebook.validate)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from saebook.validate import check_int, check_prompt, check_sae_input, check_tensor, check_tokens


def test_check_int():
    assert check_int("n", 3) == 3
    assert check_int("n", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        check_int("n", 0)
    with pytest.raises(ValueError, match=r"^n must be an int >= 2, got 1$"):
        check_int("n", 1, minimum=2)
    with pytest.raises(TypeError, match=r"^n must be an int, got float 2.0$"):
        check_int("n", 2.0)
    with pytest.raises(TypeError, match=r"^n must be an int, got bool True$"):
        check_int("n", True)


def test_check_tensor():
    x = torch.ones(2, 3)
    assert check_tensor("x", x, ndim=2, floating=True, finite=True) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        check_tensor("x", [1.0])
    with pytest.raises(ValueError, match=r"x must have 3 dimensions, got shape \(2, 3\)"):
        check_tensor("x", x, ndim=3)
    with pytest.raises(ValueError, match=r"x must be non-empty, got shape \(0, 3\)"):
        check_tensor("x", torch.ones(0, 3))
    assert check_tensor("x", torch.ones(0, 3), non_empty=False).shape == (0, 3)
    with pytest.raises(TypeError, match="x must have a floating-point dtype, got torch.int64"):
        check_tensor("x", torch.ones(2, dtype=torch.long), floating=True)
    bad = torch.tensor([1.0, float("nan"), float("inf")])
    with pytest.raises(ValueError, match="x must be finite, got 2 NaN or inf entries"):
        check_tensor("x", bad, finite=True)
    assert check_tensor("x", bad) is bad  # finiteness only when asked


def test_check_tokens():
    model = SimpleNamespace(cfg=SimpleNamespace(n_ctx=8, d_vocab=10))
    ok = torch.tensor([[0, 9, 3]], dtype=torch.int32)
    out = check_tokens(ok, model)
    assert out.dtype == torch.long and torch.equal(out, ok.long())
    cases = [
        ([[1, 2]], TypeError, "tokens must be an integer torch.Tensor"),
        (torch.ones(1, 2), TypeError, "integer dtype"),
        (torch.ones(3, dtype=torch.long), ValueError, r"got shape \(3,\)"),
        (torch.ones(1, 9, dtype=torch.long), ValueError, "n_ctx=8 columns, got 9"),
        (torch.tensor([[0, 10]]), ValueError, r"\[0, 10\).*got values in \[0, 10\]"),
        (torch.tensor([[-1, 1]]), ValueError, r"got values in \[-1, 1\]"),
        (torch.ones(1, 2, dtype=torch.long, device="meta"), ValueError, "got device meta"),
    ]
    for tokens, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            check_tokens(tokens, model, name="tokens")
    with pytest.raises(ValueError, match="^prompt must"):
        check_tokens(torch.ones(3, dtype=torch.long), model, name="prompt")


def test_check_prompt_takes_one_sequence():
    model = SimpleNamespace(cfg=SimpleNamespace(n_ctx=8, device="cpu"))
    assert check_prompt(torch.tensor([[4, 5, 6]]), model).shape == (3,)
    assert check_prompt(torch.tensor([4], dtype=torch.int32), model).shape == (1,)
    cases = [
        (torch.ones(3), TypeError, "tokens must be an integer tensor, got Tensor"),
        ([1, 2], TypeError, "got list"),
        (torch.ones(2, 3, dtype=torch.long), ValueError, r"one sequence.*got shape \(2, 3\)"),
        (torch.ones(9, dtype=torch.long), ValueError, r"seq in \[1, 8\], got shape \(9,\)"),
        (torch.ones(0, dtype=torch.long), ValueError, r"got shape \(0,\)"),
    ]
    for tokens, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            check_prompt(tokens, model)
    with pytest.raises(ValueError, match=r"prompt must be .* seq in \[2, 8\], got shape \(1,\)"):
        check_prompt(torch.tensor([3]), model, min_len=2, name="prompt")


def test_check_sae_input_flattens_heads_unless_the_sae_reshapes():
    flat_sae = SimpleNamespace(cfg=SimpleNamespace(d_in=12, reshape_activations="none"))
    z_sae = SimpleNamespace(cfg=SimpleNamespace(d_in=12, reshape_activations="hook_z"))
    z = torch.zeros(2, 5, 3, 4)
    assert check_sae_input(flat_sae, z, "blocks.0.attn.hook_z").shape == (2, 5, 12)
    assert check_sae_input(z_sae, z, "blocks.0.attn.hook_z").shape == (2, 5, 3, 4)
    assert check_sae_input(flat_sae, torch.zeros(2, 5, 12), "h").shape == (2, 5, 12)
    with pytest.raises(
        ValueError, match=r"sae.cfg.d_in must equal the width of hook 'h' \(7\), got 12"
    ):
        check_sae_input(flat_sae, torch.zeros(2, 7), "h")
