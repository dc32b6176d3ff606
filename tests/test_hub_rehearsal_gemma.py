"""The gemma profile loaded offline, through the real code, from a fabricated cache (issue 15).

Like tests/test_hub_rehearsal.py for gpt2: gemma-2-2b at reduced depth and widths (13 layers,
d_model 2304, 8 heads of 256; TransformerLens' hard-coded dims overridden by
``rehearsal.gemma_dims_override`` in the child), Gemma Scope's 16k SAEs and transcoder at
their real shapes, and monology/pile-uncopyrighted prepared from jsonl.zst, built once per set
of library versions under ``.cache/rehearsal/`` and loaded in a child process with
``HF_HUB_OFFLINE=1`` and the network block on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saebook import profiles, rehearsal

ROOT = Path(__file__).resolve().parents[1]
CACHE_BASE = ROOT / ".cache" / "rehearsal"
NETBLOCK = Path(__file__).resolve().parent / "netblock"

# --------------------------------------------------------------------------- gemma
# What the gemma profile must load: role -> (hook in, hook out, d_in, architecture), the sites
# SAELens' Gemma Scope loaders (gemma_2, gemma_2_transcoder) give these releases; attention
# SAEs read hook_z, 8 heads x 256 = 2048.
GEMMA_EXPECTED = {
    "resid": ("blocks.12.hook_resid_post", None, 2304, "jumprelu"),
    "attn": ("blocks.12.attn.hook_z", None, 2048, "jumprelu"),
    "mlp": ("blocks.12.hook_mlp_out", None, 2304, "jumprelu"),
    "transcoder": (
        "blocks.12.ln2.hook_normalized",
        "blocks.12.hook_mlp_out",
        2304,
        "jumprelu_transcoder",
    ),
}
GEMMA_BOS, GEMMA_EOS, GEMMA_PAD = 2, 1, 0
PEAK_RSS_LIMIT_GB = 6.0

_GEMMA_CHILD = r"""
import json, resource, time, warnings
import torch
start = time.time()
from saebook import profiles, rehearsal
with rehearsal.gemma_dims_override():
    p = profiles.load("gemma", device="cpu")
out = {"load_s": time.time() - start}
out["described"] = p.describe_saes()  # every chapter's banner: must load nothing
out["loaded_up_front"] = [p.saes.loaded(), p.width_family.loaded()]
m, c = p.model, p.model.cfg
out["model"] = dict(n_layers=c.n_layers, d_model=c.d_model, d_vocab=c.d_vocab, n_heads=c.n_heads,
                    d_head=c.d_head, n_kv=c.n_key_value_heads, d_mlp=c.d_mlp,
                    bos=m.tokenizer.bos_token_id, eos=m.tokenizer.eos_token_id,
                    pad=m.tokenizer.pad_token_id, name=c.model_name)
params = dict(m.named_parameters())
out["raw"] = dict(norm=c.normalization_type, ln=sorted(n for n in params if ".ln" in n and
                  n.startswith("blocks.12.")), ln_final="ln_final.w" in params,
                  w_o_mean=m.blocks[12].attn.W_O.mean(-1).abs().max().item(),
                  w_o_std=m.blocks[12].attn.W_O.std().item())
out["prompt"] = m.to_tokens("When Mary").tolist()
rows = p.tokens(16, 128, seed=0)
out["rows"] = rows.tolist()
out["rows_again"] = torch.equal(rows, p.tokens(16, 128, seed=0))
out["rows_other_seed"] = torch.equal(rows, p.tokens(16, 128, seed=1))
saes = {}
with torch.inference_mode():
    _, cache = m.run_with_cache(rows[:4], names_filter=lambda n: n.startswith("blocks.12."))
    for role in p.saes:
        sae, md = p.saes[role], p.saes[role].cfg.metadata
        acts = sae.encode(cache[md.hook_name])[:, 1:]  # not BOS
        saes[role] = dict(hook=md.hook_name, hook_out=md.hook_name_out, d_sae=sae.cfg.d_sae,
                          d_in=sae.cfg.d_in, arch=sae.cfg.architecture(),
                          in_model=md.hook_name in m.hook_dict,
                          l0=(acts > 0).float().sum(-1).mean().item())
    first = p.width_family[0]
    saes["w0"] = dict(hook=first.cfg.metadata.hook_name, d_sae=first.cfg.d_sae,
                      same_file_as_resid=torch.equal(first.W_enc, p.saes["resid"].W_enc))
out["saes"] = saes
out["loaded_after_use"] = [p.saes.loaded(), p.width_family.loaded()]
out["family_errors"] = []
for i in range(1, len(p.width_family)):
    try:
        p.width_family[i]
        out["family_errors"].append(None)
    except Exception as err:
        out["family_errors"].append([type(err).__name__, str(err)])
out["family_loaded_at_end"] = p.width_family.loaded()
# the hooks the SAEs were calibrated at, read off transformers' Gemma2 on the same tokens
from transformers import AutoModelForCausalLM
hf = AutoModelForCausalLM.from_pretrained("google/gemma-2-2b", dtype=torch.float32).eval()
ref = rehearsal.gemma_layer12_acts(hf, rows[:1, :64])
del hf
with torch.inference_mode():
    _, tl = m.run_with_cache(rows[:1, :64], names_filter=lambda n: n in ref)
out["hook_agreement"] = {
    h: [list(tl[h].shape), (tl[h].reshape(r.shape) - r).abs().max().item() / r.abs().max().item()]
    for h, r in ref.items()
}
task = p.task(n=4)
out["task"] = dict(clean=list(task.clean.shape), answer=task.answer.tolist(),
                   wrong=task.wrong.tolist(), carried=task.carried)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["concepts"] = {k: list(v) for k, v in p.concept_words().items()}
out["concept_warnings"] = [str(w.message) for w in caught if "concept" in str(w.message)]
from saebook.patch_scoping import instruct_prompt, patched_generate, placeholder_position
with rehearsal.gemma_dims_override():
    it = p.instruct_model()
chat = instruct_prompt(it)
direction = p.saes["resid"].W_dec[0].detach()
said = patched_generate(it, chat, direction, 50.0, "blocks.12.hook_resid_post",
                        placeholder_position(it, chat, "X"), max_new_tokens=2)
out["instruct"] = dict(name=it.cfg.model_name, n_layers=it.cfg.n_layers, chat=chat,
                       said=said, same_object=it is p.instruct_model(),
                       differs=not torch.equal(it.W_U, m.W_U))
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
out["total_s"] = time.time() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
out["cpu_s"] = usage.ru_utime + usage.ru_stime
print("RESULT" + json.dumps(out))
"""


def test_gemma_tokenizer_has_gemma_special_ids_and_round_trips():
    tok = rehearsal.gemma_tokenizer()
    assert tok.get_vocab_size() == rehearsal.GEMMA_REDUCED["vocab_size"]
    ids = {t: tok.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")}
    assert ids == {"<pad>": GEMMA_PAD, "<eos>": GEMMA_EOS, "<bos>": GEMMA_BOS, "<unk>": 3}
    assert tok.token_to_id("<0x00>") == 5 and tok.token_to_id("<0xFF>") == 260  # byte fallback
    text = "When Mary and John went to the store, John gave a drink to Mary. Ünïcødé 123!"
    plain = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(plain) == text  # byte fallback: every string round-trips
    assert min(plain) > 4  # plain text never produces a special token
    assert tok.encode(text).ids == [GEMMA_BOS, *plain]  # gemma adds BOS, not EOS
    for name in (" Mary", " John", " Sarah", " London", " dog", " Monday", " December"):
        assert len(tok.encode(name, add_special_tokens=False).ids) == 1, name
    with pytest.raises(ValueError, match="vocab_size"):
        rehearsal.gemma_tokenizer(vocab_size=10)


def test_gemma_dims_override_changes_only_gemma_2_2b_and_its_it_sibling_and_restores():
    from transformer_lens import loading_from_pretrained as loading

    def dims(name):
        cfg = loading.get_pretrained_model_config(name, device="cpu")
        return (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab,
                cfg.n_key_value_heads, tuple(cfg.attn_types))  # fmt: skip

    real = dims("gemma-2-2b")
    assert real[:7] == (26, 2304, 8, 256, 9216, 256000, 4)  # TransformerLens' hard-coded dims
    assert dims("gemma-2-2b-it") == real
    other_model = dims("gemma-2-9b")
    original = loading.convert_hf_model_config
    with rehearsal.gemma_dims_override():
        small = dims("gemma-2-2b")
        assert dims("gemma-2-2b-it") == small  # the instruct sibling is fabricated alike
        assert dims("gemma-2-9b") == other_model  # any other model is left alone
    assert small[:7] == (13, 2304, 8, 256, 256, 8192, 1)
    assert small[7] == real[7][:13]  # the same local/global pattern, cut at 13 layers
    assert loading.convert_hf_model_config is original and dims("gemma-2-2b") == real
    with pytest.raises(RuntimeError, match="inside"), rehearsal.gemma_dims_override():
        raise RuntimeError("inside")
    assert loading.convert_hf_model_config is original  # restored on error too


def test_gemma_fabricated_saes_are_the_profiles_16k_ones():
    spec = profiles.PROFILES["gemma"]
    wanted = rehearsal.gemma_fabricated_saes()
    roles = [(r, profiles.resolve_sae_id(r, i)) for r, i in spec.saes.values()]
    assert wanted[: len(roles)] == roles
    family_release, family_ids = spec.width_family
    assert (family_release, family_ids[0]) in wanted  # the 16k member: the resid SAE's file
    assert len(wanted) == len(roles)  # ... so nothing else is written
    assert all("width_16k" in i for _, i in wanted)
    assert not any("65k" in i or "262k" in i for _, i in wanted)


def test_jumprelu_params_fire_target_l0_on_their_calibration_rows():
    """By construction the pooled count of latents above threshold is TARGET_L0 per row."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(200, 64, generator=gen) * 3 + 1
    out = torch.randn(200, 32, generator=gen)
    sae = rehearsal._jumprelu_params(acts, acts, 512, seed=0)
    assert sae["W_enc"].shape == (64, 512) and sae["W_dec"].shape == (512, 64)
    assert torch.allclose(sae["W_dec"].norm(dim=1), torch.ones(512))
    assert (sae["threshold"] > 0).all()
    pre = acts @ sae["W_enc"] + sae["b_enc"]
    fired = (pre > sae["threshold"]).float().sum(-1).mean().item()
    assert abs(fired - rehearsal.TARGET_L0) <= 1, fired  # ties aside, exact
    tc = rehearsal._jumprelu_params(acts, out, 512, seed=0)  # a transcoder: d_in != d_out
    assert tc["W_enc"].shape == (64, 512) and tc["W_dec"].shape == (512, 32)
    assert torch.allclose(tc["b_dec"], out.mean(0))


def test_write_dataset_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="fmt must be"):
        rehearsal._write_dataset(tmp_path, "a/b", n_docs=2, fmt="csv")


@pytest.fixture(scope="session")
def gemma_cache() -> Path:
    """The fabricated gemma cache's root (built on first use; reused while pins hold)."""
    start = time.time()
    root = rehearsal.fabricate(CACHE_BASE, profiles=("gemma",))
    print(f"gemma rehearsal cache at {root} ready in {time.time() - start:.1f} s")
    return root


@pytest.fixture(scope="session")
def gemma_offline(gemma_cache) -> dict:
    """What the gemma profile loads offline from the fabricated cache (one child process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SAEBOOK_DATASET", "SAEBOOK_SIZES")}
    env.update(rehearsal.offline_env(gemma_cache))
    env["PYTHONPATH"] = os.pathsep.join([str(NETBLOCK), str(ROOT / "src")])
    env.pop("SAEBOOK_ALLOW_NETWORK", None)  # the network block stays on in the child
    result = subprocess.run(
        [sys.executable, "-c", _GEMMA_CHILD], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_gemma_cache_build_is_recorded(gemma_cache):
    info = json.loads((gemma_cache / "DONE").read_text())
    assert info["profiles"] == ["gemma"]
    print(f"fabricated gemma cache build took {info['seconds']} s")


def test_gemma_profile_loads_offline_at_gemma_shapes_with_raw_weights(gemma_offline):
    assert gemma_offline["model"] == dict(
        n_layers=13, d_model=2304, d_vocab=8192, n_heads=8, d_head=256, n_kv=1, d_mlp=256,
        bos=GEMMA_BOS, eos=GEMMA_EOS, pad=GEMMA_PAD, name="gemma-2-2b",
    )  # fmt: skip
    raw = gemma_offline["raw"]
    # from_pretrained_no_processing: RMS norms keep their scales (folding would give RMSPre
    # and drop them), and writing weights are not centred (centring zeroes their mean)
    assert raw["norm"] == "RMS" and raw["ln_final"]
    assert raw["ln"] == [f"blocks.12.{n}.w" for n in ("ln1", "ln1_post", "ln2", "ln2_post")]
    assert raw["w_o_mean"] > 1e-3 * raw["w_o_std"]


def test_gemma_saes_have_gemma_scope_widths_hooks_and_load_lazily(gemma_offline):
    assert gemma_offline["loaded_up_front"] == [[], []]  # nothing loads with the profile ...
    described = gemma_offline["described"]  # ... nor with the banner, even the 65k/262k
    for role, (hook, hook_out, _, arch) in GEMMA_EXPECTED.items():
        where = f"{hook} -> {hook_out}" if hook_out else hook
        assert described[role] == f"{arch} x16384 @ {where}", role
    assert described["width_family"] == "3 widths (16384, 65536, 262144)"
    saes = gemma_offline["saes"]
    assert set(saes) - {"w0"} == set(profiles.PROFILES["gemma"].saes) == set(GEMMA_EXPECTED)
    for role, (hook, hook_out, d_in, arch) in GEMMA_EXPECTED.items():
        got = saes[role]
        assert (got["hook"], got["hook_out"], got["d_in"], got["arch"]) == (
            hook, hook_out, d_in, arch,
        ), role  # fmt: skip
        assert got["d_sae"] == 16384 and got["in_model"], role
    assert saes["w0"] == dict(
        hook="blocks.12.hook_resid_post", d_sae=16384, same_file_as_resid=True
    )
    assert gemma_offline["loaded_after_use"] == [list(GEMMA_EXPECTED), [0]]
    # the 65k and 262k members were never fabricated: asking for them offline says which one
    # is missing and why, and loads nothing
    errors = gemma_offline["family_errors"]
    _, ids = profiles.PROFILES["gemma"].width_family
    assert len(errors) == len(ids) - 1 == 2
    for (kind, message), sae_id in zip(errors, ids[1:], strict=True):
        assert kind == "MissingArtifactError"
        assert repr(sae_id) in message and "HF_HUB_OFFLINE=1" in message
    assert gemma_offline["family_loaded_at_end"] == [0]


def test_gemma_layer12_hooks_mean_what_transformer_lens_means(gemma_offline):
    """The calibration read transformers' Gemma2 at the modules TransformerLens' hooks stand
    for; on the same tokens the two agree to float error (TransformerLens' hook_z is per head)."""
    agreement = gemma_offline["hook_agreement"]
    assert set(agreement) == {h for h, *_ in GEMMA_EXPECTED.values()}
    for hook, (shape, rel_err) in agreement.items():
        assert shape[:2] == [1, 64], hook
        assert rel_err < 1e-4, (hook, rel_err)
    assert agreement["blocks.12.attn.hook_z"][0] == [1, 64, 8, 256]


def test_gemma_fabricated_saes_fire_about_forty_latents(gemma_offline):
    """Thresholds were calibrated on other text through ``transformers``; L0 through
    TransformerLens and SAELens on four rows of the stream lands near 40 (rows of a random
    model differ from each other more than positions do, so it scatters: 51-134 measured)."""
    for role, got in gemma_offline["saes"].items():
        if role != "w0":
            print(role, round(got["l0"], 1))
            assert 10 <= got["l0"] <= 160, (role, got["l0"])


def test_gemma_token_rows_have_one_bos_and_eos_separators(gemma_offline):
    """BOS (2) != EOS (1) on gemma: BOS only opens a row, documents are joined by one EOS."""
    rows = torch.tensor(gemma_offline["rows"])
    assert rows.shape == (16, 128)
    assert (rows[:, 0] == GEMMA_BOS).all()
    assert not (rows[:, 1:] == GEMMA_BOS).any()  # exactly one BOS per row, none doubled
    assert not (rows == GEMMA_PAD).any()
    assert (rows[:, 1] != GEMMA_EOS).all()  # a row never opens on a separator
    sep = rows[:, 1:] == GEMMA_EOS
    assert sep.any()
    assert not (sep[:, 1:] & sep[:, :-1]).any()  # never two separators in a row
    tok = rehearsal.gemma_tokenizer()
    docs = set(rehearsal.synthetic_documents(400, seed=0))
    whole = 0
    for row in rows.tolist():
        cuts = [i for i, t in enumerate(row) if t == GEMMA_EOS]
        for a, b in zip(cuts, cuts[1:], strict=False):
            assert tok.decode(row[a + 1 : b]) in docs  # one whole document between separators
            whole += 1
    assert whole > 0
    assert gemma_offline["rows_again"] and not gemma_offline["rows_other_seed"]
    prompt = gemma_offline["prompt"][0]  # to_tokens on text: gemma's tokenizer adds the BOS
    assert prompt[0] == GEMMA_BOS and GEMMA_BOS not in prompt[1:]


def test_gemma_task_and_concept_words_offline(gemma_offline):
    task = gemma_offline["task"]
    tok = rehearsal.gemma_tokenizer()
    assert task["clean"][0] == 4 and "name" in task["carried"]
    for answer, wrong in zip(task["answer"], task["wrong"], strict=True):
        assert answer != wrong
        for token in (answer, wrong):
            assert tok.decode([token]).startswith(" ") and tok.decode([token]).strip().isalpha()
    # the fabricated vocabulary holds every concept word as one token, as gemma's 256k does
    assert gemma_offline["concepts"] == {c: list(w) for c, w in profiles.HUB_CONCEPT_WORDS.items()}
    assert gemma_offline["concept_warnings"] == []


def test_gemma_instruct_model_loads_offline_and_takes_a_patched_chat_prompt(gemma_offline):
    it = gemma_offline["instruct"]
    assert it["name"] == "gemma-2-2b-it" and it["n_layers"] == 13
    assert it["same_object"] and it["differs"]  # loaded once, and not the base model
    assert it["chat"] == (
        '<start_of_turn>user\nWhat is the meaning of the word "X"?<end_of_turn>\n'
        "<start_of_turn>model\nThat word means"
    )
    assert isinstance(it["said"], str) and it["said"]


def test_gemma_profile_load_time_and_peak_memory(gemma_offline):
    """Full gemma-2-2b in fp32 (~10 GB) does not fit beside other work; the reduced model
    with its four 16k SAEs loaded must stay under 6 GB."""
    print(
        f"gemma profile loaded offline in {gemma_offline['load_s']:.1f} s; child ran "
        f"{gemma_offline['total_s']:.1f} s ({gemma_offline['cpu_s']:.1f} CPU-s) at peak RSS "
        f"{gemma_offline['peak_rss_gb']:.2f} GB"
    )
    assert gemma_offline["peak_rss_gb"] <= PEAK_RSS_LIMIT_GB
    assert gemma_offline["load_s"] < 180
