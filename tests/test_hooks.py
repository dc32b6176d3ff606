"""The shared plumbing in saebook.hooks, on the micro world's model and SAEs."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import torch
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name

from saebook.hooks import (
    bos_mask,
    bos_token_id,
    check_sae_hooks,
    encode,
    exclude_special_tokens,
    flatten_heads,
    hook_layer,
    reachable,
    sae_hooks,
    starts_with_bos,
    stop_layer,
)


def test_sae_hooks_reads_and_writes(micro_model):
    _, saes, _ = micro_model
    resid, tc = saes["resid"], saes["transcoder"]
    assert sae_hooks(resid) == (resid.cfg.metadata.hook_name,) * 2
    hook_in, hook_out = sae_hooks(tc)
    assert hook_in == tc.cfg.metadata.hook_name and hook_out == tc.cfg.metadata.hook_name_out
    assert hook_in != hook_out
    with pytest.raises(TypeError, match=r"sae_lens SAE \(with cfg.metadata\), got dict"):
        sae_hooks({})


def test_check_sae_hooks_names_the_missing_hook(micro_model):
    model, saes, _ = micro_model
    sae = saes["resid"]
    assert check_sae_hooks(model, sae) == sae_hooks(sae)
    old = sae.cfg.metadata.hook_name
    try:
        sae.cfg.metadata.hook_name = "blocks.9.hook_resid_pre"
        with pytest.raises(
            ValueError,
            match=r"hook_name must be a hook of the model, got "
            r"'blocks.9.hook_resid_pre' \(hooks with that suffix",
        ):
            check_sae_hooks(model, sae)
    finally:
        sae.cfg.metadata.hook_name = old


def test_hook_layer_and_stop_layer_agree_with_saelens_on_block_hooks(micro_model):
    model, _, _ = micro_model
    for hook in model.hook_dict:
        if hook.startswith("blocks."):
            assert hook_layer(hook) == int(hook.split(".")[1])
            assert stop_layer(hook) == extract_stop_at_layer_from_tlens_hook_name(hook)
    assert hook_layer("hook_embed") is None and hook_layer("ln_final.hook_scale") is None
    assert stop_layer("hook_embed") == 0 and stop_layer("hook_pos_embed") == 0
    assert stop_layer("ln_final.hook_normalized") is None
    assert stop_layer("hook_embed", "blocks.1.hook_resid_pre") == 2
    assert stop_layer("blocks.0.hook_resid_pre", "ln_final.hook_scale") is None
    with pytest.raises(ValueError, match="hooks must name at least one hook"):
        stop_layer()
    with pytest.raises(TypeError, match="hook must be a hook name"):
        hook_layer(3)


def test_stop_layer_still_runs_the_hook(micro_model):
    """Stopping at stop_layer(hook) gives the same activation as the full forward pass."""
    model, _, _ = micro_model
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 6))
    last = model.cfg.n_layers - 1
    for hook in ("hook_embed", "blocks.0.hook_resid_post", f"blocks.{last}.hook_mlp_out"):
        _, full = model.run_with_cache(tokens, names_filter=hook)
        _, short = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop_layer(hook))
        assert torch.equal(full[hook], short[hook]), hook


def test_bos_mask_and_starts_with_bos(micro_model):
    model, _, _ = micro_model
    bos = bos_token_id(model)
    assert bos == model.tokenizer.bos_token_id
    other = (bos + 1) % model.cfg.d_vocab
    tokens = torch.tensor([[bos, other, other], [other, bos, other]])
    assert bos_mask(model, tokens).tolist() == [[False, True, True], [True, False, True]]
    assert bos_mask(model, tokens, exclude_bos=False).all()
    assert starts_with_bos(model, tokens[0]) and starts_with_bos(model, tokens[:1])
    assert not starts_with_bos(model, tokens[1])
    assert exclude_special_tokens(model) == [bos]
    no_bos = SimpleNamespace(tokenizer=None)
    assert bos_token_id(no_bos) is None
    assert bos_mask(no_bos, tokens).tolist() == [[False, True, True]] * 2
    assert not starts_with_bos(no_bos, tokens[0])
    assert exclude_special_tokens(no_bos) is False
    with pytest.raises(ValueError, match=r"tokens must be a \(batch, seq\) tensor, got \(3,\)"):
        bos_mask(model, tokens[0])


def test_flatten_heads_and_encode(micro_model):
    model, saes, _ = micro_model
    attn = saes["attn"]  # reads blocks.1.attn.hook_z
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 5))
    _, cache = model.run_with_cache(tokens, names_filter=attn.cfg.metadata.hook_name)
    z = cache[attn.cfg.metadata.hook_name]  # (batch, seq, heads, d_head)
    assert z.ndim == 4
    flat = flatten_heads(attn, z)
    if attn.cfg.reshape_activations == "hook_z":
        assert flat is z
    else:
        assert flat.shape == (2, 5, z.shape[-2] * z.shape[-1])
    assert flatten_heads(attn, z[0], batched=False).shape[-1] == flat.shape[-1]
    expected = attn.encode(z.reshape(2, 5, -1)) if flat is not z else attn.encode(z)
    assert torch.allclose(encode(attn, z), expected)
    assert torch.allclose(encode(attn, z[0], batched=False), expected[0])
    resid = saes["resid"]
    x = torch.randn(3, resid.cfg.d_in)
    assert flatten_heads(resid, x) is x


def test_reachable_opens_a_local_socket_and_fails_quietly():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert reachable(("127.0.0.1", port), timeout=1.0)
        assert reachable(f"http://127.0.0.1:{port}/v1", timeout=1.0)
    finally:
        server.close()
    assert not reachable(("127.0.0.1", port), timeout=1.0)  # closed now
    with pytest.raises(ValueError, match="address must be a URL with a host"):
        reachable("not a url")
    with pytest.raises(ValueError, match=r"address must be a URL or \(host, port\)"):
        reachable(("a", 1, 2))
