"""Patchscopes: identity prompts, placeholder positions, batched patching and token sets."""

from __future__ import annotations

import pytest
import torch

from saebook import checks
from saebook.patch_scoping import (
    entropy,
    identity_prompt,
    patch_scope,
    patched_generate,
    placeholder_position,
    random_directions_like,
    residual_norm,
    set_probability,
)

HOOK = "blocks.1.hook_resid_pre"


def test_identity_prompt_and_placeholder(micro_model):
    model, _, _ = micro_model
    assert identity_prompt() == "cat -> cat; 135 -> 135; hello -> hello; ? ->"
    assert identity_prompt(["a"], placeholder="X", arrow=":", sep=" | ") == "a: a | X:"
    with pytest.raises(ValueError, match="examples"):
        identity_prompt("cat")
    prompt = identity_prompt()
    pos = placeholder_position(model, prompt)
    assert model.to_str_tokens(prompt)[pos].strip() == "?"
    assert (
        placeholder_position(model, "Lily saw Tom", "Tom")
        == len(model.to_str_tokens("Lily saw Tom")) - 1
    )
    with pytest.raises(ValueError, match="must occur"):
        placeholder_position(model, prompt, "#")


def test_patch_scope_replace_and_add(micro_model):
    model, _, _ = micro_model
    prompt = "Lily saw a cat and"
    n = len(model.to_str_tokens(prompt))
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(3, model.cfg.d_model, generator=gen)
    out = patch_scope(model, prompt, dirs, [1.0, 4.0], HOOK, n - 1)
    assert out.shape == (3, 2, model.cfg.d_vocab)
    assert torch.allclose(out.exp().sum(-1), torch.ones(3, 2), atol=1e-4)
    # replace at the last position == running the rest of the model on that vector alone
    unit = dirs[1] / dirs[1].norm()

    def replace(act, hook):
        act[:, -1] = 4.0 * unit
        return act

    ref = model.run_with_hooks(model.to_tokens(prompt), fwd_hooks=[(HOOK, replace)])[0, -1]
    assert torch.allclose(out[1, 1], ref.log_softmax(-1).detach(), atol=1e-4)
    # batching does not change the answer
    one_by_one = torch.cat([patch_scope(model, prompt, dirs[i : i + 1], [1.0, 4.0], HOOK, -1)
                            for i in range(3)])  # fmt: skip
    batched = patch_scope(model, prompt, dirs, [1.0, 4.0], HOOK, -1, batch_size=2)
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    # add with scale 0 leaves the model unchanged; replace does not
    base = model(prompt)[0, -1].log_softmax(-1).detach()
    added = patch_scope(model, prompt, dirs, [0.0], HOOK, 2, mode="add")
    assert torch.allclose(added[:, 0], base.expand(3, -1), atol=1e-4)
    assert not torch.allclose(patch_scope(model, prompt, dirs, [3.0], HOOK, -1)[0, 0], base)
    with pytest.raises(ValueError, match="mode must be"):
        patch_scope(model, prompt, dirs, [1.0], HOOK, 0, mode="swap")
    with pytest.raises(IndexError, match="position must be"):
        patch_scope(model, prompt, dirs, [1.0], HOOK, n)
    with pytest.raises(ValueError, match="non-zero"):
        patch_scope(model, prompt, torch.zeros(1, model.cfg.d_model), [1.0], HOOK, 0)
    with pytest.raises(ValueError, match="directions must have shape"):
        patch_scope(model, prompt, dirs[:, :5], [1.0], HOOK, 0)
    with pytest.raises(KeyError, match="hook must be"):
        patch_scope(model, prompt, dirs, [1.0], "blocks.9.nothing", 0)


def test_patched_generate_and_helpers(micro_model):
    model, _, _ = micro_model
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(model.cfg.d_model, generator=gen)
    text = patched_generate(model, "Lily saw", direction, 5.0, HOOK, -1, max_new_tokens=3)
    assert isinstance(text, str)
    # the first generated token is the argmax of the patched distribution
    first = patch_scope(model, "Lily saw", direction[None], [5.0], HOOK, -1)[0, 0].argmax()
    assert text.startswith(model.to_string(first[None]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        patched_generate(model, "Lily", direction, 1.0, HOOK, -1, max_new_tokens=0)
    norm = residual_norm(model, model.to_tokens(["Lily saw a cat", "Tom ran to the"]), HOOK)
    assert norm > 0
    rand = random_directions_like(torch.randn(4, 8) * 3)
    assert rand.shape == (4, 8)
    lp = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]).log()
    assert torch.allclose(set_probability(lp, torch.tensor([True, False, True])),
                          torch.tensor([0.75, 1.0]))  # fmt: skip
    assert torch.allclose(entropy(lp), torch.tensor([1.0397, 0.0]), atol=1e-4)
    with pytest.raises(ValueError, match="in_set must have shape"):
        set_probability(lp, torch.tensor([True]))


def test_random_directions_keep_norms():
    d = torch.randn(5, 16) * torch.arange(1, 6)[:, None]
    r = random_directions_like(d, seed=3)
    assert torch.allclose(r.norm(dim=-1), d.norm(dim=-1), atol=1e-5)
    assert torch.equal(r, random_directions_like(d, seed=3))
    assert (torch.nn.functional.cosine_similarity(r, d).abs() < 0.9).all()


def test_set_probability_checker():
    checks.check_set_probability(lambda lp, s: set_probability(lp, s))
    with pytest.raises(AssertionError, match="case"):
        checks.check_set_probability(lambda lp, s: lp[..., s].exp().sum(-1) / 2)


def test_patch_scope_matches_a_forward_from_the_patched_residual(micro_model, reference_row):
    """patch_scope (a hook on the running model, batched over directions and scales) against
    TransformerLens' ``start_at_layer``: the clean residual stream at the hook, cached once,
    with the scaled unit direction written into (or added to) one position by hand, run
    through the remaining layers; entropies against scipy.stats.entropy of the probabilities."""
    import numpy as np
    from scipy.stats import entropy as scipy_entropy

    model, _, _ = micro_model
    prompt = "Lily saw a cat and the dog"
    tokens = model.to_tokens(prompt)
    position = 3
    gen = torch.Generator().manual_seed(5)
    dirs = torch.randn(4, model.cfg.d_model, generator=gen) * 3
    scales = [0.5, 2.0, 8.0]
    worst = {"replace": 0.0, "add": 0.0}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
        clean = cache[HOOK][0]  # (seq, d_model)
        for mode in worst:
            got = patch_scope(model, prompt, dirs, scales, HOOK, position, mode=mode, batch_size=5)
            for i, direction in enumerate(dirs):
                for j, scale in enumerate(scales):
                    resid = clean.clone()
                    vector = scale * direction / direction.norm()
                    resid[position] = vector if mode == "replace" else resid[position] + vector
                    logits = model(resid[None], start_at_layer=1)[0, -1]
                    ref = logits.log_softmax(-1)
                    worst[mode] = max(worst[mode], float((got[i, j] - ref).abs().max()))
    probs = got.exp().double().numpy()
    ent_gap = float(np.abs(entropy(got).double().numpy() - scipy_entropy(probs, axis=-1)).max())
    ok = max(worst.values()) < 1e-4 and ent_gap < 1e-4
    reference_row(
        technique="patch scoping: patched next-token distributions",
        reference="TransformerLens start_at_layer on the cached residual patched by hand; "
        "scipy.stats.entropy (micro world)",
        quantity="max abs difference of log-probabilities (replace, add); of entropies",
        measured=f"replace {worst['replace']:.1e}, add {worst['add']:.1e}, entropy {ent_gap:.1e}",
        tolerance="1e-4",
        ok=ok,
    )
    assert max(worst.values()) < 1e-4
    assert ent_gap < 1e-4


def test_instruct_prompt_uses_the_chat_template_and_finds_the_placeholder(micro_model):
    import copy

    from saebook.patch_scoping import instruct_prompt, placeholder_position

    model = copy.copy(micro_model[0])  # a shallow copy: the shared model keeps its tokenizer
    with pytest.raises(ValueError, match="chat template"):
        instruct_prompt(model)
    model.tokenizer = copy.deepcopy(model.tokenizer)
    # gemma's template, in short: BOS, then turns between <start_of_turn> and <end_of_turn>
    model.tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    prompt = instruct_prompt(model)
    assert prompt == (
        '<start_of_turn>user\nWhat is the meaning of the word "X"?<end_of_turn>\n'
        "<start_of_turn>model\nThat word means"
    )
    # the micro model reads 32 tokens: a compact template and question to find the placeholder
    model.tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}: {% endif %}"
    )
    short = instruct_prompt(model, question="{x}?", answer="It is")
    assert short == "X?: It is"
    pos = placeholder_position(model, short, "X")
    assert model.to_str_tokens(model.to_tokens(short)[0])[pos].endswith("X")
    with pytest.raises(ValueError, match="answer must not contain"):
        instruct_prompt(model, answer="X means")


def test_only_gemma_names_an_instruction_tuned_model():
    from saebook import profiles

    assert profiles.PROFILES["gemma"].instruct_model == "gemma-2-2b-it"
    assert profiles.PROFILES["gpt2"].instruct_model is None
    assert profiles.load("tiny", device="cpu").instruct_model() is None
