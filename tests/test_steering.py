"""Tests for saebook.steering on the micro tiny-world build."""

from __future__ import annotations

import socket

import pytest
import requests
import torch

from saebook import checks
from saebook.directions import decoder_directions
from saebook.steering import (
    generate,
    generated_loss,
    neuronpedia_steer,
    steering_hook,
    steering_hook_name,
    steering_sweep,
    text_label_concept,
    token_set_concept,
)


@pytest.fixture(scope="module")
def parts(micro_model):
    model, saes, _ = micro_model
    return model, saes


@pytest.fixture(scope="module")
def prompts(parts):
    model, _ = parts
    g = torch.Generator().manual_seed(0)
    body = torch.randint(0, model.cfg.d_vocab, (3, 4), generator=g)
    bos = torch.full((3, 1), model.tokenizer.bos_token_id)
    return torch.cat([bos, body], dim=1)


def test_steering_hook_adds_scaled_direction():
    direction = torch.tensor([1.0, -2.0, 0.5])
    acts = torch.randn(2, 4, 3)
    out = steering_hook(direction, 3.0)(acts, None)
    torch.testing.assert_close(out, acts + 3.0 * direction)
    assert not torch.equal(out, acts)
    torch.testing.assert_close(steering_hook(direction, 0.0)(acts, None), acts)


def test_steering_hook_rejects_bad_input():
    with pytest.raises(ValueError, match="direction"):
        steering_hook(torch.zeros(2, 3), 1.0)
    with pytest.raises(TypeError, match="coefficient"):
        steering_hook(torch.zeros(3), "big")
    with pytest.raises(ValueError, match="d_model=3"):
        steering_hook(torch.zeros(3), 1.0)(torch.zeros(1, 2, 4), None)


def test_steering_hook_name_per_sae_kind(parts):
    _, saes = parts
    assert steering_hook_name(saes["resid"]) == "blocks.1.hook_resid_pre"
    assert steering_hook_name(saes["attn"]) == "blocks.1.hook_attn_out"
    assert steering_hook_name(saes["mlp"]) == "blocks.0.hook_mlp_out"
    assert steering_hook_name(saes["transcoder"]) == "blocks.0.hook_mlp_out"


def test_generate_is_seeded_and_zero_steering_is_exact(parts, prompts, reference_row):
    model, saes = parts
    a = generate(model, prompts, 6, seed=3)
    b = generate(model, prompts, 6, seed=3)
    assert a.shape == (3, prompts.shape[1] + 6)
    assert torch.equal(a, b)
    assert torch.equal(a[:, : prompts.shape[1]], prompts)
    direction = decoder_directions(model, saes["resid"], [0])[0]
    hooks = [("blocks.1.hook_resid_pre", steering_hook(direction, 0.0))]
    zero = generate(model, prompts, 6, hooks=hooks, seed=3)
    reference_row(
        technique="steering",
        reference="plain seeded generation without hooks (micro world)",
        quantity="tokens generated with coefficient 0",
        measured=f"{int((zero == a).sum())} of {a.numel()} tokens identical",
        tolerance="all identical",
        ok=bool(torch.equal(zero, a)),
    )
    assert torch.equal(zero, a)
    big = [("blocks.1.hook_resid_pre", steering_hook(direction, 500.0))]
    assert not torch.equal(generate(model, prompts, 6, hooks=big, seed=3), a)


def test_generate_rejects_bad_input(parts, prompts):
    model, _ = parts
    with pytest.raises(ValueError, match="prompts"):
        generate(model, prompts[0], 4)
    with pytest.raises(ValueError, match="n_ctx"):
        generate(model, prompts, model.cfg.n_ctx)
    with pytest.raises(ValueError, match="new_tokens"):
        generate(model, prompts, 0)


def test_generated_loss_matches_manual(parts, prompts):
    model, _ = parts
    tokens = generate(model, prompts, 5, seed=0)
    start = prompts.shape[1]
    logprobs = model(tokens).log_softmax(-1)
    manual = -logprobs[:, start - 1 : -1].gather(-1, tokens[:, start:, None]).mean()
    assert generated_loss(model, tokens, start) == pytest.approx(float(manual), rel=1e-4)
    with pytest.raises(ValueError, match="start"):
        generated_loss(model, tokens, 0)


def test_steering_sweep_table_and_reproduction(parts, prompts):
    model, saes = parts
    sae = saes["resid"]
    everything = token_set_concept(torch.arange(model.cfg.d_vocab))
    result = steering_sweep(model, sae, 1, prompts, [0.0, 50.0], everything, 5, progress=False)
    assert list(result.table.columns) == ["coefficient", "concept_frequency", "loss"]
    assert result.table["concept_frequency"].tolist() == [1.0, 1.0]
    assert torch.equal(result.tokens[0.0], generate(model, prompts, 5, seed=0))
    assert not torch.equal(result.tokens[50.0], result.tokens[0.0])
    # the frequency counts generated tokens only, not the prompt
    bos_only = token_set_concept([model.tokenizer.bos_token_id])
    again = steering_sweep(model, sae, 1, prompts, [0.0], bos_only, 5, progress=False)
    generated = result.tokens[0.0][:, prompts.shape[1] :]
    expected = float((generated == model.tokenizer.bos_token_id).float().mean())
    assert again.table["concept_frequency"].iloc[0] == pytest.approx(expected)


def test_steering_sweep_rejects_bad_concept_and_latent(parts, prompts):
    model, saes = parts
    sae = saes["resid"]
    with pytest.raises(ValueError, match="concept"):
        steering_sweep(model, sae, 0, prompts, [1.0], lambda t: t[:, :1] > 0, 3, progress=False)
    with pytest.raises(IndexError, match="latent"):
        steering_sweep(model, sae, sae.cfg.d_sae, prompts, [1.0], token_set_concept([1]), 3)
    with pytest.raises(ValueError, match="coefficients"):
        steering_sweep(model, sae, 0, prompts, [], token_set_concept([1]), 3)


def test_token_set_and_text_label_concepts():
    tokens = torch.tensor([[0, 1, 2, 3]])
    assert token_set_concept([1, 3])(tokens).tolist() == [[False, True, False, True]]
    with pytest.raises(ValueError, match="token_ids"):
        token_set_concept([])

    def labeller(strs):
        return {"shout": [s.isupper() for s in strs]}

    concept = text_label_concept(labeller, ["a", "B", "c", "D"], "shout")
    assert concept(tokens).tolist() == [[False, True, False, True]]
    with pytest.raises(KeyError, match="label"):
        text_label_concept(labeller, ["a", "B", "c", "D"], "whisper")(tokens)


def test_neuronpedia_steer_offline_is_one_line(parts, monkeypatch):
    _, saes = parts
    sae = saes["resid"]
    assert "neuronpedia_id" in neuronpedia_steer(sae, 0, "Once", 1.0)
    monkeypatch.setattr(sae.cfg.metadata, "neuronpedia_id", "gpt2-small/8-res-jb")

    def blocked(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(requests.Session, "request", blocked)
    answer = neuronpedia_steer(sae, 0, "Once", 1.0)
    assert isinstance(answer, str) and "not reachable" in answer and "\n" not in answer


def test_neuronpedia_steer_request_failure_never_raises(parts, monkeypatch):
    _, saes = parts
    sae = saes["resid"]
    monkeypatch.setattr(sae.cfg.metadata, "neuronpedia_id", "gpt2-small/8-res-jb")
    monkeypatch.setattr("saebook.neuronpedia.online", lambda timeout=2.0: True)
    sent = {}

    def failing(session, method, url, json=None, headers=None, timeout=None):
        sent.update(method=method, url=url, body=json, timeout=timeout)
        raise requests.Timeout("slow service")

    monkeypatch.setattr(requests.Session, "request", failing)
    answer = neuronpedia_steer(sae, 7, "Once", 2.5, timeout=3.0)
    assert answer.startswith("Neuronpedia steering failed: POST https://")
    assert "/api/steer failed: Timeout: slow service" in answer and "\n" not in answer
    assert sent["method"] == "POST" and sent["timeout"] == 3.0
    feature = sent["body"]["features"][0]
    assert feature["index"] == 7 and feature["layer"] == "8-res-jb" and feature["strength"] == 2.5


def test_check_steering_hook_accepts_reference_and_rejects_wrong_sign():
    checks.check_steering_hook(lambda d, c: lambda a, hook=None: a + c * d)
    with pytest.raises(AssertionError, match="case"):
        checks.check_steering_hook(lambda d, c: lambda a, hook=None: a - c * d)
