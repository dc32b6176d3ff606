"""The hub profiles loaded offline, through the real code, from a fabricated cache (issue 15).

``saebook.rehearsal.fabricate`` writes a Hugging Face cache with gpt2-small's real config and
random weights of the real shapes, every SAELens release the gpt2 profile names in its real
file layout, and a ``datasets`` cache entry for the token stream. It is built once per set of
library versions under ``.cache/rehearsal/`` (git-ignored) and reused. The profile is then
loaded in a child process (``huggingface_hub`` reads its cache location at import) with
``HF_HUB_OFFLINE=1`` and the network block on, and the child reports what it loaded.

The gemma profile is rehearsed the same way in tests/test_hub_rehearsal_gemma.py (its own
file, so that pytest-xdist runs the two on different workers).
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

# What the gpt2 profile must load: role -> (hook, width), from SAELens' registry entries.
GPT2_EXPECTED = {
    "resid": ("blocks.8.hook_resid_pre", 24576),
    "attn": ("blocks.5.attn.hook_z", 49152),
    "mlp": ("blocks.8.hook_mlp_out", 24576),
}
GPT2_FAMILY_WIDTHS = [768, 1536, 3072, 6144, 12288]
# Attention SAEs by layer (the attn role's and the head SAEs for IOI), from the registry
GPT2_Z_EXPECTED = {5: 49152, 8: 24576, 9: 24576}

_CHILD = r"""
import json, os, sys, time
import torch
start = time.time()
from saebook import profiles
from saebook.errors import MissingArtifactError
p = profiles.load("gpt2", device="cpu")
out = {"load_s": time.time() - start}
out["described"] = p.describe_saes()  # every chapter's banner: must load nothing
out["loaded_up_front"] = [p.saes.loaded(), p.width_family.loaded()]
m = p.model
out["model"] = dict(n_layers=m.cfg.n_layers, d_model=m.cfg.d_model, d_vocab=m.cfg.d_vocab,
                    bos=m.tokenizer.bos_token_id, eos=m.tokenizer.eos_token_id)
rows = p.tokens(16, 128, seed=0)
out["rows"] = rows.tolist()
out["rows_again"] = torch.equal(rows, p.tokens(16, 128, seed=0))
out["rows_other_seed"] = torch.equal(rows, p.tokens(16, 128, seed=1))
out["decoded_docs"] = None
saes = {}
heads = p.attn_saes()
out["attn_layers"] = list(heads)
out["task_heads"] = {role: [list(h) for h in hs] for role, hs in p.task_heads.items()}
hooks = sorted({s.cfg.metadata.hook_name
                for s in [*p.saes.values(), *p.width_family, *heads.values()]})
with torch.inference_mode():
    _, cache = m.run_with_cache(rows[:4], names_filter=lambda n: n in hooks)
    for role, sae in [*p.saes.items(), *[(f"w{i}", s) for i, s in enumerate(p.width_family)],
                      *[(f"z{layer}", s) for layer, s in heads.items()]]:
        hook = sae.cfg.metadata.hook_name
        acts = sae.encode(cache[hook])[:, 1:]  # not BOS
        saes[role] = dict(hook=hook, d_sae=sae.cfg.d_sae, d_in=sae.cfg.d_in,
                          in_model=hook in m.hook_dict,
                          l0=(acts > 0).float().sum(-1).mean().item(),
                          arch=sae.cfg.architecture())
out["saes"] = saes
task = p.task(n=4)
out["task"] = dict(clean=list(task.clean.shape), answer=task.answer.tolist(),
                   wrong=task.wrong.tolist())
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    words = p.concept_words()
out["concepts"] = {c: list(w) for c, w in words.items()}
out["concept_warnings"] = [str(w.message) for w in caught]
out["task_words"] = [task.setup, task.carried, task.corruption]
os.environ["SAEBOOK_DATASET"] = "nobody/no-such-dataset"
try:
    p.tokens(2, 16)
    out["bad_dataset_error"] = None
except MissingArtifactError as err:
    out["bad_dataset_error"] = str(err)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    """The fabricated cache's root (built on first use, < 60 s; reused while pins hold)."""
    start = time.time()
    root = rehearsal.fabricate(CACHE_BASE)
    print(f"rehearsal cache at {root} ready in {time.time() - start:.1f} s")
    return root


@pytest.fixture(scope="session")
def gpt2_offline(hub_cache) -> dict:
    """What the gpt2 profile loads offline from the fabricated cache (one child process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SAEBOOK_DATASET",)}
    env.update(rehearsal.offline_env(hub_cache))
    env["PYTHONPATH"] = os.pathsep.join([str(NETBLOCK), str(ROOT / "src")])
    env.pop("SAEBOOK_ALLOW_NETWORK", None)  # the network block stays on in the child
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-6000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_cache_key_changes_with_library_versions(monkeypatch):
    key = rehearsal.cache_key()
    assert key == rehearsal.cache_key() and len(key) == 16
    real = rehearsal.metadata.version
    monkeypatch.setattr(
        rehearsal.metadata, "version", lambda n: "0.0.1" if n == "torch" else real(n)
    )
    assert rehearsal.cache_key() != key


def test_offline_env_points_every_library_at_the_root(tmp_path):
    env = rehearsal.offline_env(tmp_path)
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1"
    assert env["HF_HUB_CACHE"].startswith(str(tmp_path))
    assert env["HF_DATASETS_CACHE"].startswith(str(tmp_path))


def test_fabricate_rejects_unknown_profiles(tmp_path):
    with pytest.raises(ValueError, match="profiles must be"):
        rehearsal.fabricate(tmp_path, profiles=("gpt5",))
    with pytest.raises(ValueError, match="profiles must be"):
        rehearsal.fabricate(tmp_path, profiles=())
    assert list(tmp_path.iterdir()) == []  # nothing was built


def test_each_set_of_profiles_has_its_own_cache_key():
    """gpt2's key is the one it had before gemma existed (its cache is not rebuilt)."""
    assert rehearsal.cache_key(("gpt2",)) == rehearsal.cache_key()
    keys = {rehearsal.cache_key(p) for p in [("gpt2",), ("gemma",), ("gpt2", "gemma")]}
    assert len(keys) == 3


def test_byte_level_tokenizer_has_gpt2_vocabulary_and_round_trips():
    tok = rehearsal.byte_level_tokenizer()
    assert tok.get_vocab_size() == 50257
    assert tok.token_to_id("<|endoftext|>") == 50256
    text = "When Mary and John went to the store, John gave a drink to Mary. Ünïcødé 123!"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text  # byte-level: every string round-trips
    assert max(ids) < 50256  # plain text never produces the special token
    for name in (" Mary", " John", " Sarah"):
        assert len(tok.encode(name).ids) == 1  # IOI needs single-token names
    for word in (" Monday", " Sunday", " May", " December"):
        assert len(tok.encode(word).ids) == 1  # as on gpt2: circular features read them
    with pytest.raises(ValueError, match="vocab_size"):
        rehearsal.byte_level_tokenizer(vocab_size=10)


def test_synthetic_documents_are_deterministic_and_varied():
    docs = rehearsal.synthetic_documents(20, seed=3)
    assert docs == rehearsal.synthetic_documents(20, seed=3)
    assert docs != rehearsal.synthetic_documents(20, seed=4)
    assert len(set(docs)) == 20 and all(d.endswith(".") for d in docs)


def test_cache_is_reused(hub_cache):
    """A finished cache is returned as it is: nothing is rebuilt (its DONE file is untouched).
    The build time is printed, not asserted (timings belong to benchmarks/)."""
    done = hub_cache / "DONE"
    before = done.stat().st_mtime_ns
    assert rehearsal.fabricate(CACHE_BASE) == hub_cache
    assert done.stat().st_mtime_ns == before
    info = json.loads(done.read_text())
    print(f"fabricated cache build took {info['seconds']} s")


def test_gpt2_profile_loads_offline_with_real_shapes(gpt2_offline):
    assert gpt2_offline["model"] == dict(
        n_layers=12, d_model=768, d_vocab=50257, bos=50256, eos=50256
    )
    assert gpt2_offline["loaded_up_front"] == [[], []]  # SAEs load on first access
    described = gpt2_offline["described"]  # the banner, read from configs before any load
    for role, (hook, width) in GPT2_EXPECTED.items():
        assert described[role] == f"standard x{width} @ {hook}", role
    widths = ", ".join(map(str, GPT2_FAMILY_WIDTHS))
    assert described["width_family"] == f"{len(GPT2_FAMILY_WIDTHS)} widths ({widths})"
    spec = profiles.PROFILES["gpt2"]
    saes = gpt2_offline["saes"]
    assert {r for r in saes if r[0] not in "wz"} == set(spec.saes) == set(GPT2_EXPECTED)
    for role, (hook, width) in GPT2_EXPECTED.items():
        got = saes[role]
        assert (got["hook"], got["d_sae"], got["d_in"]) == (hook, width, 768), role
        assert got["in_model"] and got["arch"] == "standard"
    family = [saes[f"w{i}"] for i in range(len(GPT2_FAMILY_WIDTHS))]
    assert [s["d_sae"] for s in family] == GPT2_FAMILY_WIDTHS  # narrow to wide
    assert {s["hook"] for s in family} == {"blocks.8.hook_resid_pre"}
    # attention SAEs by layer: the attn role's and the head SAEs Wang et al.'s heads write to
    assert gpt2_offline["attn_layers"] == list(GPT2_Z_EXPECTED)
    for layer, width in GPT2_Z_EXPECTED.items():
        got = saes[f"z{layer}"]
        hook = f"blocks.{layer}.attn.hook_z"
        assert (got["hook"], got["d_sae"], got["d_in"]) == (hook, width, 768), layer
    heads = gpt2_offline["task_heads"]
    assert heads["name mover"] == [[9, 9], [9, 6], [10, 0]]
    assert heads["S-inhibition"] == [[7, 3], [7, 9], [8, 6], [8, 10]]


def test_fabricated_saes_fire_about_forty_latents(gpt2_offline):
    """The encoder biases were calibrated on other text; L0 on the stream lands near 40."""
    for role, got in gpt2_offline["saes"].items():
        print(role, round(got["l0"], 1))
        assert 10 <= got["l0"] <= 160, (role, got["l0"])


def test_gpt2_token_rows_have_one_bos_and_single_separators(gpt2_offline):
    rows = torch.tensor(gpt2_offline["rows"])
    bos = eos = 50256
    assert rows.shape == (16, 128)
    assert (rows[:, 0] == bos).all()
    assert (rows[:, 1] != bos).all()  # no doubled BOS (issue 15, item 5)
    sep = rows[:, 1:] == eos
    assert sep.any()  # short synthetic documents: every few rows crosses a boundary
    assert not (sep[:, 1:] & sep[:, :-1]).any()  # never two separators in a row
    # every complete segment between two separators decodes to one whole document
    tok = rehearsal.byte_level_tokenizer()
    docs = set(rehearsal.synthetic_documents(400, seed=0))
    whole = 0
    for row in rows.tolist():
        cuts = [i for i, t in enumerate(row) if t == eos and i > 0]
        for a, b in zip(cuts, cuts[1:], strict=False):
            assert tok.decode(row[a + 1 : b]) in docs
            whole += 1
    assert whole > 0
    assert gpt2_offline["rows_again"] and not gpt2_offline["rows_other_seed"]


def test_gpt2_task_and_dataset_error_offline(gpt2_offline):
    task = gpt2_offline["task"]
    assert task["clean"][0] == 4 and task["answer"] != task["wrong"]
    message = gpt2_offline["bad_dataset_error"]
    assert message is not None
    assert "nobody/no-such-dataset" in message and "$SAEBOOK_DATASET" in message
    assert "parquet" in message


def test_gpt2_concept_words_are_single_tokens_of_its_tokenizer(gpt2_offline):
    """deeper/05 and deeper/07 ask the profile for words; each kept word is one gpt2 token."""
    tok = rehearsal.byte_level_tokenizer()
    concepts = gpt2_offline["concepts"]
    assert set(concepts) == set(profiles.HUB_CONCEPT_WORDS)
    # the fabricated tokenizer merges only its own word list, so most categories lose words
    # here (on the real gpt2 vocabulary these common words are single tokens); names survive
    assert len(concepts["name"]) >= 3, concepts["name"]
    for category, words in concepts.items():
        for word in words:
            forms = [" " + word, " " + word[:1].upper() + word[1:], word]
            assert any(len(tok.encode(f).ids) == 1 for f in forms), word
        dropped = set(profiles.HUB_CONCEPT_WORDS[category]) - set(words)
        for word in dropped:  # every dropped word is named in the warning
            assert any(f"{category}:{word}" in m for m in gpt2_offline["concept_warnings"])
    assert "name" in gpt2_offline["task_words"][1]  # IOI prose, not the code digit


def test_gpt2_profile_loads_in_reasonable_time_and_says_so(gpt2_offline):
    print(f"gpt2 profile loaded offline in {gpt2_offline['load_s']:.1f} s")
    assert gpt2_offline["load_s"] < 180  # measured ~25 s on the contended 2-core machine
