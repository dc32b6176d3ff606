"""A fabricated, offline Hugging Face cache for rehearsing the hub profiles at real shapes.

The ``gpt2`` and ``gemma`` profiles download a model, SAELens' pretrained SAEs and a text dataset
from the Hugging Face hub. To exercise that code path without a network (tests, ``make rehearse``),
:func:`fabricate` writes a hub cache holding, for ``gpt2``:

- gpt2-small: its real ``config.json``, random weights of the real shapes and key names
  (``GPT2LMHeadModel`` saved by ``transformers``), and a byte-level BPE tokenizer of vocabulary
  50257 with ``<|endoftext|>`` = 50256, built with ``tokenizers``;
- every SAELens release the profile names, in the file layout SAELens' loaders read
  (``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors`` for the SAELens-format
  releases, ``*.pt`` + ``*_cfg.json`` for ``gpt2-small-hook-z-kk``), with random weights whose
  encoder biases are calibrated on the fabricated model so about :data:`TARGET_L0` latents fire;
- the profile's text dataset as the prepared ``datasets`` cache entry that ``load_dataset``
  streams from when offline (synthetic English-like documents).

and, for ``gemma`` (gemma-2-2b in fp32 is ~10 GB, too much for a test, so at reduced size):

- gemma-2-2b at :data:`GEMMA_REDUCED` depth and widths (13 layers, so that layer 12 exists;
  ``d_model`` 2304 and 8 heads of 256, so Gemma Scope's SAEs attach at their real widths; a small
  MLP and vocabulary): gemma-2-2b's real ``config.json`` with those fields changed, random
  weights under ``Gemma2ForCausalLM``'s key names, and a Gemma-like tokenizer (``<pad>`` = 0,
  ``<eos>`` = 1, ``<bos>`` = 2: BOS and EOS differ, unlike gpt2). TransformerLens hard-codes
  gemma-2-2b's dimensions by name, so loading needs :func:`gemma_dims_override` too;
- the profile's 16k Gemma Scope SAEs and transcoder (``params.npz`` under the repo folders
  SAELens' registry names), JumpReLU thresholds calibrated so about :data:`TARGET_L0` latents
  fire; the 65k and 262k members of the width family are left out (they must load lazily);
- ``monology/pile-uncopyrighted`` as a ``datasets`` cache entry prepared from ``jsonl.zst``
  (its real format: ``text`` and ``meta`` columns).

Loading then runs through the real code (``HookedSAETransformer.from_pretrained``,
``SAE.from_pretrained``, ``datasets.load_dataset``) with :func:`offline_env` set. The cache is
keyed on the versions of the libraries that write and read it and on the profiles it holds (one
cache per set of profiles), so a cache built once is reused until a pin changes. Weights are
random: content checks fail on them by design; the rehearsal finds failures of the code
(shapes, memory, devices, token layout).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch

__all__ = [
    "TARGET_L0",
    "GPT2_CONFIG",
    "GEMMA2_2B_CONFIG",
    "GEMMA_REDUCED",
    "GEMMA_SPECIAL_TOKENS",
    "PROFILES_FABRICATED",
    "cache_key",
    "fabricate",
    "offline_env",
    "byte_level_tokenizer",
    "gemma_tokenizer",
    "gemma_dims_override",
    "gemma_transformer_lens_dims",
    "gemma_fabricated_saes",
    "gemma_layer12_acts",
    "synthetic_documents",
]

TARGET_L0 = 40  # latents firing per token on average in the fabricated SAEs
COMMIT = hashlib.sha1(b"saebook-rehearsal").hexdigest()  # the fake revision every repo is at
_LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "datasets",
    "sae-lens",
    "transformer-lens",
    "pyarrow",
)
FORMAT_VERSION = "4"  # bump when this module writes a different cache

# gpt2-small's config.json as published on the hub (openai-community/gpt2).
GPT2_CONFIG: dict = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}

# gemma-2-2b's config.json as published on the hub (google/gemma-2-2b).
GEMMA2_2B_CONFIG: dict = {
    "architectures": ["Gemma2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304,
    "initializer_range": 0.02,
    "intermediate_size": 9216,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 8,
    "num_hidden_layers": 26,
    "num_key_value_heads": 4,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "torch_dtype": "float32",
    "transformers_version": "4.42.4",
    "use_cache": True,
    "vocab_size": 256000,
}

#: The fields of :data:`GEMMA2_2B_CONFIG` the rehearsal changes, and why. Kept real: d_model
#: (2304, the d_in of Gemma Scope's residual, MLP and transcoder SAEs), 8 query heads of 256
#: (2048 = the attention SAEs' d_in on hook_z), the attention scale, soft caps, window, norms.
GEMMA_REDUCED: dict = {
    "num_hidden_layers": 13,  # layer 12, where the profile's SAEs sit, is the last
    "num_key_value_heads": 1,  # 4 on the real model
    "intermediate_size": 256,  # 9216
    "vocab_size": 8192,  # 256000
}
#: Gemma's special tokens and ids: pad 0, eos 1, bos 2 (BOS != EOS, unlike gpt2's 50256).
GEMMA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
GEMMA_REPO = "google/gemma-2-2b"
GEMMA_IT_REPO = "google/gemma-2-2b-it"
#: gemma-2-2b-it's chat template (from its tokenizer_config.json), shortened to what user and
#: model turns need: BOS, then ``<start_of_turn>role\ncontent<end_of_turn>\n`` per message.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
#: The profiles :func:`fabricate` can build.
PROFILES_FABRICATED: tuple[str, ...] = ("gpt2", "gemma")

_WORDS = (
    "the a an of to in and or but is was were be been has had have it its this that these "
    "those he she they we you I his her their our my your when where while after before "
    "because although if then than so very more most less many few some any each every "
    "city river house garden school market teacher doctor child mother father friend king "
    "queen dog cat bird tree stone water fire light night morning evening summer winter "
    "walked ran said gave took made found saw heard thought knew wanted looked called asked "
    "red green blue small large old new early late quiet loud happy sad bright dark "
    "went store drink gave Mary John Alice Bob Sarah James Emma David Lucy Peter Anna Tom "
    "Paul Laura Mark"
).split()


def cache_key(profiles: tuple[str, ...] = ("gpt2",)) -> str:
    """A short hash of this module's format, the installed versions of the libraries and the
    ``profiles`` the cache holds (each set of profiles is its own cache; the key of the
    original gpt2-only cache is unchanged)."""
    versions = []
    for name in _LIBRARIES:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}==absent")
    text = ";".join([FORMAT_VERSION, *versions])
    if tuple(profiles) != ("gpt2",):
        text += ";profiles=" + ",".join(profiles)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def offline_env(root: str | os.PathLike) -> dict[str, str]:
    """Environment variables that point Hugging Face libraries at the cache under ``root``."""
    root = Path(root)
    return {
        "HF_HOME": str(root / "hf"),
        "HF_HUB_CACHE": str(root / "hf" / "hub"),
        "HF_DATASETS_CACHE": str(root / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


# --------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _cycle_words() -> list[str]:
    """Day and month names (``saebook.circular.CYCLE_WORDS``): one token each on gpt2, gemma."""
    from saebook.circular import CYCLE_WORDS

    return [w for words in CYCLE_WORDS.values() for w in words]


def byte_level_tokenizer(vocab_size: int = 50257, eos: str = "<|endoftext|>"):
    """A byte-level BPE ``tokenizers.Tokenizer`` of ``vocab_size`` ids, ``eos`` the last id.

    The 256 byte symbols come first, then merges: pairs of frequent English words' pieces
    first (so text tokenizes into word-like pieces), then pairs of byte symbols, until the
    vocabulary has ``vocab_size - 1`` entries; ``eos`` is the special token at
    ``vocab_size - 1``, as on gpt2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300, got {vocab_size!r}")
    byte_chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {c: i for i, c in enumerate(byte_chars)}
    merges: list[tuple[str, str]] = []
    b2u = _bytes_to_unicode()

    def add(a: str, b: str) -> None:
        if len(vocab) >= vocab_size - 1 or a + b in vocab:
            return
        vocab[a + b] = len(vocab)
        merges.append((a, b))

    # whole words, merged left to right: every word after a space first (so " Mary" is one
    # token, as names are on gpt2), then every word at the start of a text; day and month names
    # too (one token each after a space on gpt2, read by the circular-features chapter)
    words = [*_WORDS, *_cycle_words()]
    for text in [" " + w for w in words] + words:
        pieces = [b2u[b] for b in text.encode()]
        acc = pieces[0]
        for p in pieces[1:]:
            add(acc, p)
            acc = acc + p
    # then every pair of byte symbols, letters first, until the vocabulary is full
    order = sorted(byte_chars, key=lambda c: (not c.isalpha(), byte_chars.index(c)))
    for a in order:
        for b in order:
            add(a, b)
        if len(vocab) >= vocab_size - 1:
            break
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([eos])
    assert tok.get_vocab_size() == vocab_size and tok.token_to_id(eos) == vocab_size - 1
    return tok


def gemma_tokenizer(vocab_size: int = GEMMA_REDUCED["vocab_size"]):
    """A Gemma-like ``tokenizers.Tokenizer`` of ``vocab_size`` ids.

    Laid out as gemma's: :data:`GEMMA_SPECIAL_TOKENS` at ids 0-4 (``<pad>``, ``<eos>``,
    ``<bos>``, ``<unk>``, ``<mask>``), then the 256 byte-fallback tokens ``<0x00>``..``<0xFF>``,
    then BPE pieces over text whose spaces are written ``▁`` (no pre-tokenizer, no prefix
    space), decoded back by replacing ``▁``, fusing bytes. Pieces: the printable ASCII
    characters and ``▁``, then whole words of :func:`synthetic_documents`' word list and of
    :data:`saebook.profiles.HUB_CONCEPT_WORDS` after a ``▁`` (one token each, as on gemma's
    256k vocabulary), then the same words at the start of a text, then pairs of characters
    until the vocabulary is full. ``transformers``' ``GemmaTokenizer`` rebuilds its backend from
    these pieces and merges, so the file's pipeline mirrors that class's.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from saebook.profiles import HUB_CONCEPT_WORDS

    if vocab_size < 400:
        raise ValueError(f"vocab_size must be >= 400, got {vocab_size!r}")
    vocab: dict[str, int] = {t: i for i, t in enumerate(GEMMA_SPECIAL_TOKENS)}
    vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(256)})
    chars = [chr(c) for c in range(33, 127)]
    for c in [*chars, "\u2581"]:
        vocab[c] = len(vocab)
    merges: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if len(vocab) >= vocab_size or a + b in vocab:
            return
        vocab[a + b] = len(vocab)
        merges.append((a, b))

    concept = (w for ws in HUB_CONCEPT_WORDS.values() for w in ws)
    words = list(dict.fromkeys([*_WORDS, *concept, *_cycle_words()]))
    for text in ["\u2581" + w for w in words] + words:  # merged left to right
        acc = text[0]
        for ch in text[1:]:
            add(acc, ch)
            acc += ch
    order = sorted(chars, key=lambda c: (not c.isalpha(), chars.index(c)))
    for a in order:
        for b in order:
            add(a, b)
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens(list(GEMMA_SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    assert tok.get_vocab_size() == vocab_size and tok.token_to_id("<bos>") == 2
    return tok


def gemma_transformer_lens_dims() -> dict:
    """:data:`GEMMA_REDUCED` in TransformerLens' config names (and its attention pattern)."""
    n_layers = GEMMA_REDUCED["num_hidden_layers"]
    return {
        "n_layers": n_layers,
        "n_key_value_heads": GEMMA_REDUCED["num_key_value_heads"],
        "d_mlp": GEMMA_REDUCED["intermediate_size"],
        "d_vocab": GEMMA_REDUCED["vocab_size"],
        # transformers makes even layers sliding-window, as TransformerLens' ["local", "global"]
        "attn_types": [("local", "global")[i % 2] for i in range(n_layers)],
    }


@contextmanager
def gemma_dims_override() -> Iterator[None]:
    """Within the block, TransformerLens builds gemma-2-2b at :data:`GEMMA_REDUCED` dimensions.

    TransformerLens does not read gemma-2-2b's ``config.json``: ``convert_hf_model_config`` in
    ``transformer_lens.loading_from_pretrained`` returns a hard-coded dict for any official
    name starting ``google/gemma-2-2b`` (26 layers, d_mlp 9216, d_vocab 256000, 4 key-value
    heads) and ``get_pretrained_model_config`` looks that function up by module global. The
    block replaces it with a wrapper that updates the dict for that name with
    :func:`gemma_transformer_lens_dims` (every other model and field is left as TransformerLens
    has it), so ``HookedSAETransformer.from_pretrained_no_processing("gemma-2-2b")`` builds the
    model whose weights :func:`fabricate` wrote. Restored on exit, even on error.
    """
    import transformer_lens.loading_from_pretrained as loading

    original = loading.convert_hf_model_config

    def reduced(model_name, **kwargs):
        cfg = original(model_name, **kwargs)
        if cfg.get("tokenizer_name") in (GEMMA_REPO, GEMMA_IT_REPO):
            cfg.update(gemma_transformer_lens_dims())
        return cfg

    loading.convert_hf_model_config = reduced
    try:
        yield
    finally:
        loading.convert_hf_model_config = original


def synthetic_documents(n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` short English-like documents of varying length (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n_docs):
        n_sent = int(torch.randint(2, 12, (1,), generator=gen))
        sents = []
        for _ in range(n_sent):
            n = int(torch.randint(5, 16, (1,), generator=gen))
            idx = torch.randint(0, len(_WORDS), (n,), generator=gen).tolist()
            words = [_WORDS[i] for i in idx]
            sents.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sents))
    return docs


# --------------------------------------------------------------------------- hub layout
def _repo_dir(hub: Path, repo_type: str, repo_id: str) -> Path:
    """Create a repo folder of the hub cache at revision ``main`` -> :data:`COMMIT`."""
    folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _write_gpt2(hub: Path):
    """Write gpt2-small's repo; return the ``transformers`` model and the tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    snap = _repo_dir(hub, "model", "gpt2")
    torch.manual_seed(0)
    config = GPT2Config(**{k: v for k, v in GPT2_CONFIG.items() if k != "architectures"})
    model = GPT2LMHeadModel(config).eval()  # no dropout in the calibration pass
    model.save_pretrained(snap, safe_serialization=True)
    (snap / "config.json").write_text(json.dumps(GPT2_CONFIG, indent=2))  # the real file
    (snap / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 50256, "eos_token_id": 50256})
    )
    tok = byte_level_tokenizer()
    tok.save(str(snap / "tokenizer.json"))
    tok.model.save(str(snap))  # vocab.json, merges.txt
    (snap / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    return model, tok


# --------------------------------------------------------------------------- SAEs
def _random_sae(d_in: int, d_sae: int, acts: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Random SAE weights whose encoder biases make about TARGET_L0 latents fire on ``acts``.

    ``acts`` (rows x d_in) are activations of the fabricated model at the SAE's hook. Each
    latent's bias is set at the
    latent's mean plus ``z`` standard deviations, ``z`` the value that standardised
    pre-activations of all latents exceed ``TARGET_L0`` times per row.
    """
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc = w_dec.T.contiguous()
    b_dec = acts.mean(0)
    pre = (acts - b_dec) @ w_enc  # rows x d_sae
    mean, std = pre.mean(0), pre.std(0).clamp_min(1e-6)
    standard = ((pre - mean) / std).flatten()
    # the standardised value exceeded TARGET_L0 times per row on average, pooled over latents
    # (pre-activations are heavy-tailed on attention outputs, so no Gaussian quantile)
    z = standard.topk(TARGET_L0 * acts.shape[0]).values[-1]
    b_enc = -(mean + z * std)
    return {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec}


def _saelens_cfg(hook: str, d_in: int, d_sae: int, dataset: str) -> dict:
    """A pre-6.0 SAELens ``cfg.json`` as the gpt2 releases ship it."""
    layer = int(hook.split(".")[1])
    return {
        "model_name": "gpt2-small",
        "hook_point": hook,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": dataset,
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "d_in": d_in,
        "d_sae": d_sae,
        "expansion_factor": d_sae // d_in,
        "b_dec_init_method": "geometric_median",
        "lp_norm": 1,
        "device": "cpu",
        "dtype": "torch.float32",
        "prepend_bos": True,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
    }


def _write_saelens_sae(snap: Path, folder: str, cfg: dict, weights: dict) -> None:
    from safetensors.torch import save_file

    out = snap / folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "sae_weights.safetensors"))
    log_density = torch.full((cfg["d_sae"],), math.log10(TARGET_L0 / cfg["d_sae"]))
    save_file({"sparsity": log_density}, str(out / "sparsity.safetensors"))


class _StopForward(Exception):
    """Raised by :func:`_forward_with_hooks` to end a forward pass early."""


def _forward_with_hooks(model, tokens: torch.Tensor, handles: list, stop_after=None) -> None:
    """One ``transformers`` forward pass of ``model`` on ``tokens`` (inference mode) with the
    torch hooks already registered as ``handles``, which are removed afterwards.

    ``stop_after`` (a submodule of ``model``, optional) ends the pass once that module has run:
    the calibration passes read activations of a few layers, and the layers after them (and
    the unembedding, a 50257-wide matrix product for gpt2) cannot change what was recorded.
    """

    def stop(module, args, out) -> None:
        raise _StopForward

    if stop_after is not None:
        handles = [*handles, stop_after.register_forward_hook(stop)]
    try:
        with torch.inference_mode():
            model(tokens)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def _gpt2_z_layers() -> list[int]:
    """Layers of the gpt2 profile's attention (hook_z) SAEs: its ``attn`` role and head SAEs."""
    from saebook.hooks import hook_layer
    from saebook.profiles import PROFILES

    spec = PROFILES["gpt2"]
    return sorted({hook_layer(spec.saes["attn"][1]), *spec.head_saes})


def _hook_acts(model, tok, n_rows: int = 128, per_row: int = 8) -> dict[str, torch.Tensor]:
    """Activations of the fabricated gpt2 at the SAE hooks, as TransformerLens will see them.

    Computed on the ``transformers`` model just built (loading it through TransformerLens
    would double the build time). ``from_pretrained`` centres every weight that writes to the
    residual stream and folds LayerNorm scales; at this model's initialisation (unit LayerNorm
    scales, zero biases) that makes TransformerLens' ``hook_resid_pre`` and ``hook_mlp_out``
    the ``transformers`` values minus their mean over features, and ``hook_z`` identical.
    The rehearsal tests check the resulting L0 through the real loading path.
    """
    stream: list[int] = []
    for doc in synthetic_documents(200, seed=1):  # packed like the profile's token rows
        stream += tok.encode(doc).ids + [50256]
    rows = [[50256] + stream[i * 63 : (i + 1) * 63] for i in range(n_rows)]
    tokens = torch.tensor(rows)
    seen: dict[str, torch.Tensor] = {}
    blocks = model.transformer.h
    handles = [
        blocks[8].register_forward_pre_hook(
            lambda m, args: seen.__setitem__("blocks.8.hook_resid_pre", args[0])
        ),
        blocks[8].mlp.register_forward_hook(
            lambda m, args, out: seen.__setitem__("blocks.8.hook_mlp_out", out)
        ),
    ]
    z_layers = _gpt2_z_layers()
    for layer in z_layers:
        handles.append(
            blocks[layer].attn.c_proj.register_forward_pre_hook(
                lambda m, args, name=f"blocks.{layer}.attn.hook_z": seen.__setitem__(name, args[0])
            )
        )
    last = max(8, *z_layers)
    _forward_with_hooks(model, tokens, handles, stop_after=blocks[last])  # the last hook read
    out = {}
    gen = torch.Generator().manual_seed(0)
    for name, a in seen.items():
        # positions of one row are strongly correlated on a random model (attention averages
        # the same values), so take a few random positions (not BOS) from many rows
        pos = torch.randint(1, a.shape[1], (a.shape[0], per_row), generator=gen)
        a = a[torch.arange(a.shape[0])[:, None], pos].reshape(-1, a.shape[-1]).float()
        if not name.endswith("hook_z"):
            a = a - a.mean(-1, keepdim=True)
        out[name] = a.clone()
    return out


def _write_gpt2_saes(hub: Path, model, tok) -> None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saebook.profiles import PROFILES

    spec = PROFILES["gpt2"]
    directory = get_pretrained_saes_directory()
    wanted = list(spec.saes.values()) + [(spec.width_family[0], i) for i in spec.width_family[1]]
    wanted += list(spec.head_saes.values())
    acts = _hook_acts(model, tok)
    for n, (release, sae_id) in enumerate(wanted):
        entry = directory[release]
        folder = entry.saes_map[sae_id]
        snap = _repo_dir(hub, "model", entry.repo_id)
        if entry.conversion_func == "connor_rob_hook_z":
            layer = int(sae_id.split(".")[1])
            hook = f"blocks.{layer}.attn.hook_z"
            d_sae = int(folder.split("_ds")[1].split("_")[0])
            weights = _random_sae(768, d_sae, acts[hook], seed=n)
            torch.save(weights, snap / folder)
            cfg = {
                "act_size": 768,
                "dict_size": d_sae,
                "act_name": hook,
                "layer": layer,
                "site": "z",
                "model_name": "gpt2-small",
                "seq_len": 128,
            }
            (snap / (folder.split(".pt")[0] + "_cfg.json")).write_text(json.dumps(cfg))
        elif entry.conversion_func is None:
            hook = sae_id.rsplit("_", 1)[0] if "resid_pre_" in sae_id else sae_id
            d_sae = int(sae_id.rsplit("_", 1)[1]) if "resid_pre_" in sae_id else 24576
            weights = _random_sae(768, d_sae, acts[hook], seed=n)
            cfg = _saelens_cfg(hook, 768, d_sae, spec.dataset or "")
            _write_saelens_sae(snap, folder, cfg, weights)
        else:
            raise NotImplementedError(
                f"no fabricated layout for conversion {entry.conversion_func!r} ({release})"
            )


# --------------------------------------------------------------------------- gemma
def _write_gemma(
    hub: Path, repo: str = GEMMA_REPO, chat_template: str | None = None, seed: int = 0
):
    """Write gemma-2-2b's repo (or ``repo``, e.g. the instruction-tuned one, with its
    ``chat_template``) at :data:`GEMMA_REDUCED` size, weights drawn with ``seed``; return the
    model and tokenizer."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    snap = _repo_dir(hub, "model", repo)
    config_json = {**GEMMA2_2B_CONFIG, **GEMMA_REDUCED}
    (snap / "config.json").write_text(json.dumps(config_json, indent=2))
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(Gemma2Config.from_pretrained(snap)).eval()
    model.save_pretrained(snap, safe_serialization=True)
    (snap / "config.json").write_text(json.dumps(config_json, indent=2))  # the real layout
    (snap / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0})
    )
    tok = gemma_tokenizer()
    tok.save(str(snap / "tokenizer.json"))
    special = dict(zip(("pad", "eos", "bos", "unk"), GEMMA_SPECIAL_TOKENS, strict=False))
    (snap / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                **{f"{k}_token": v for k, v in special.items()},
                "clean_up_tokenization_spaces": False,
                "model_max_length": 1000000000000000019884624838656,
                "spaces_between_special_tokens": False,
                "tokenizer_class": "GemmaTokenizer",
                **({"chat_template": chat_template} if chat_template else {}),
            },
            indent=2,
        )
    )
    (snap / "special_tokens_map.json").write_text(
        json.dumps({f"{k}_token": v for k, v in special.items()}, indent=2)
    )
    return model, tok


def gemma_layer12_acts(model, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``transformers`` Gemma-2 model's layer-12 activations on ``tokens`` (batch x pos),
    under the names TransformerLens gives them when it loads the model with raw weights
    (``from_pretrained_no_processing``), each ``batch x pos x width``.

    ``blocks.12.hook_resid_post`` is the decoder layer's output; ``blocks.12.attn.hook_z`` the
    input of ``o_proj`` (heads flattened head-major, as SAELens reads hook_z);
    ``blocks.12.hook_mlp_out`` the output of ``post_feedforward_layernorm`` (what the block adds
    to the residual stream); ``blocks.12.ln2.hook_normalized`` the input of
    ``pre_feedforward_layernorm`` divided by its RMS (TransformerLens hooks it before the
    norm's scale). The rehearsal test compares these with TransformerLens' own cache.
    """
    eps = GEMMA2_2B_CONFIG["rms_norm_eps"]
    layer = model.model.layers[12]
    seen: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor) -> None:
        seen[name] = (value[0] if isinstance(value, tuple) else value).float().clone()

    def normalized(x: torch.Tensor) -> torch.Tensor:
        return x.float() / (x.float().pow(2).mean(-1, keepdim=True) + eps).sqrt()

    handles = [
        layer.register_forward_hook(lambda m, a, out: put("blocks.12.hook_resid_post", out)),
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a: put("blocks.12.attn.hook_z", a[0])
        ),
        layer.post_feedforward_layernorm.register_forward_hook(
            lambda m, a, out: put("blocks.12.hook_mlp_out", out)
        ),
        layer.pre_feedforward_layernorm.register_forward_pre_hook(
            lambda m, a: put("blocks.12.ln2.hook_normalized", normalized(a[0]))
        ),
    ]
    _forward_with_hooks(model, tokens, handles, stop_after=layer)  # no final norm or unembedding
    return seen


def _gemma_hook_acts(model, tok, n_rows: int = 24, seq: int = 48, per_row: int = 16):
    """Calibration activations: :func:`gemma_layer12_acts` at ``per_row`` random positions (not
    BOS) of each of ``n_rows`` rows of ``seq`` tokens, packed like the profile's token rows
    from documents other than the dataset's; rows x width per hook."""
    stream: list[int] = []
    for doc in synthetic_documents(100, seed=1):
        stream += tok.encode(doc, add_special_tokens=False).ids + [1]
    rows = [[2] + stream[i * (seq - 1) : (i + 1) * (seq - 1)] for i in range(n_rows)]
    seen = gemma_layer12_acts(model, torch.tensor(rows))
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(1, seq, (n_rows, per_row), generator=gen)  # not BOS
    return {
        name: a[torch.arange(n_rows)[:, None], pos].reshape(-1, a.shape[-1])
        for name, a in seen.items()
    }


def _jumprelu_params(
    acts_in: torch.Tensor, acts_out: torch.Tensor, d_sae: int, seed: int
) -> dict[str, torch.Tensor]:
    """Random Gemma Scope-style JumpReLU parameters, about TARGET_L0 latents firing on ``acts_in``.

    ``acts_in`` (rows x d_in) are what the encoder reads, ``acts_out`` (rows x d_out) what the
    decoder writes (the same tensor for an SAE, the MLP output for a transcoder). The encoder
    bias centres each latent's pre-activation (Gemma Scope SAEs do not subtract ``b_dec``
    first) and its threshold is ``z`` of its standard deviations, ``z`` the standardised value
    the pre-activations of all latents exceed TARGET_L0 times per row.
    """
    gen = torch.Generator().manual_seed(seed)
    d_in, d_out = acts_in.shape[1], acts_out.shape[1]
    w_dec = torch.randn(d_sae, d_out, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    if d_in == d_out:
        w_enc = w_dec.T.contiguous()
    else:
        w_enc = torch.randn(d_in, d_sae, generator=gen)
        w_enc /= w_enc.norm(dim=0, keepdim=True)
    pre = acts_in @ w_enc
    mean, std = pre.mean(0), pre.std(0).clamp_min(1e-6)
    z = ((pre - mean) / std).flatten().topk(TARGET_L0 * acts_in.shape[0]).values[-1]
    return {
        "W_enc": w_enc,
        "W_dec": w_dec,
        "b_enc": -mean,
        "b_dec": acts_out.mean(0),
        "threshold": z.clamp_min(1e-3) * std,
    }


def gemma_fabricated_saes() -> list[tuple[str, str]]:
    """The (release, sae_id) pairs of the gemma profile the rehearsal writes: its roles and
    the 16k member of its width family (the 65k and 262k members are left out)."""
    from saebook.profiles import PROFILES, resolve_sae_id

    spec = PROFILES["gemma"]
    release, ids = spec.width_family
    wanted = [(r, resolve_sae_id(r, i)) for r, i in spec.saes.values()]
    wanted += [(release, i) for i in ids if "width_16k" in i]
    return list(dict.fromkeys(wanted))


def _write_gemma_saes(hub: Path, model, tok) -> None:
    """Write each of :func:`gemma_fabricated_saes` as ``<repo>/<path>/params.npz``.

    Repo ids and folder paths come from SAELens' registry; hook names and widths from the
    config function SAELens' own loader calls for the release (``gemma_2`` or
    ``gemma_2_transcoder``), so each SAE is calibrated at the hook it will be read at.
    """
    import numpy as np
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_CONFIG_GETTERS
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    acts = _gemma_hook_acts(model, tok)
    for n, (release, sae_id) in enumerate(gemma_fabricated_saes()):
        entry = directory[release]
        folder = entry.saes_map[sae_id]
        if entry.conversion_func not in ("gemma_2", "gemma_2_transcoder"):
            raise NotImplementedError(
                f"no fabricated layout for conversion {entry.conversion_func!r} ({release})"
            )
        cfg = NAMED_PRETRAINED_SAE_CONFIG_GETTERS[entry.conversion_func](
            entry.repo_id, folder, device="cpu"
        )
        acts_in = acts[cfg["hook_name"]]
        acts_out = acts[cfg.get("hook_name_out") or cfg["hook_name"]]
        if acts_in.shape[1] != cfg["d_in"]:
            raise ValueError(f"{release} {sae_id}: d_in {cfg['d_in']} != {acts_in.shape[1]}")
        params = _jumprelu_params(acts_in, acts_out, cfg["d_sae"], seed=100 + n)
        out = _repo_dir(hub, "model", entry.repo_id) / folder
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "params.npz", **{k: v.numpy() for k, v in params.items()})


# --------------------------------------------------------------------------- dataset
def _write_dataset(root: Path, repo_id: str, n_docs: int = 400, fmt: str = "parquet") -> None:
    """Write the dataset cache entry ``datasets`` falls back to offline for ``repo_id``.

    Offline, ``load_dataset(repo_id)`` looks for a dataset prepared earlier under
    ``$HF_DATASETS_CACHE/<namespace>___<name>/<config>/<version>/<hash>/`` and streams its
    arrow file. The entry is prepared from a file of :func:`synthetic_documents` in the
    repo's format by ``datasets``' own builder for it, then moved to the name the repo id maps
    to: ``fmt="parquet"`` (a ``text`` column, as NeelNanda/pile-10k) or ``fmt="jsonl.zst"``
    (``text`` and ``meta`` fields, zstandard-compressed JSON lines, as
    monology/pile-uncopyrighted).
    """
    namespace, name = repo_id.split("/")
    docs = synthetic_documents(n_docs, seed=0)
    source = root / "source" / f"{name}-train.{fmt}"
    source.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets.packaged_modules.parquet.parquet import Parquet as Builder

        pq.write_table(pa.table({"text": docs}), source)
    elif fmt == "jsonl.zst":
        import zstandard
        from datasets.packaged_modules.json.json import Json as Builder

        lines = "".join(
            json.dumps({"text": d, "meta": {"pile_set_name": "Pile-CC"}}) + "\n" for d in docs
        )
        source.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    else:
        raise ValueError(f"fmt must be 'parquet' or 'jsonl.zst', got {fmt!r}")
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    builder = Builder(
        cache_dir=str(cache),
        dataset_name=name,
        data_files={"train": [str(source)]},
        hash="rehearsal",
        config_id="default",
    )
    builder.download_and_prepare()
    target = cache / f"{namespace}___{name}"
    if target.exists():
        shutil.rmtree(target)
    (cache / name).rename(target)


# --------------------------------------------------------------------------- entry point
def fabricate(base: str | os.PathLike, profiles: tuple[str, ...] = ("gpt2",)) -> Path:
    """Build (or reuse) the fabricated cache for ``profiles`` under ``base``; return its root.

    ``profiles`` is a non-empty subset of :data:`PROFILES_FABRICATED`. The root is
    ``base/<cache_key(profiles)>``; a finished build leaves a ``DONE`` file, and a root that
    has one is returned at once. The build runs in a child Python process started with
    :func:`offline_env` (``huggingface_hub`` reads its cache location at import), so it
    works from a process that has already imported the Hugging Face libraries. Pass the root
    to :func:`offline_env` to load from it (and, for gemma, load inside
    :func:`gemma_dims_override`).
    """
    profiles = tuple(profiles)
    if not profiles or set(profiles) - set(PROFILES_FABRICATED):
        raise ValueError(
            f"profiles must be a non-empty subset of {PROFILES_FABRICATED}, got {profiles!r}"
        )
    profiles = tuple(p for p in PROFILES_FABRICATED if p in profiles)  # canonical order
    root = Path(base).resolve() / cache_key(profiles)
    if (root / "DONE").exists():
        return root
    if root.exists():
        shutil.rmtree(root)  # an interrupted build
    env = {**os.environ, **offline_env(root)}
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "saebook.rehearsal", str(root), *profiles]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not (root / "DONE").exists():
        raise RuntimeError(
            f"building the rehearsal cache in {root} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    return root


def _build(root: Path, profiles: tuple[str, ...]) -> None:
    """The child process of :func:`fabricate`: write every repo, then ``DONE``."""
    from saebook.profiles import PROFILES

    start = time.time()
    hub = Path(os.environ["HF_HUB_CACHE"])
    hub.mkdir(parents=True, exist_ok=True)
    seconds = {}
    if "gpt2" in profiles:
        model, tok = _write_gpt2(hub)
        _write_gpt2_saes(hub, model, tok)
        del model
        _write_dataset(root, PROFILES["gpt2"].dataset)
        seconds["gpt2"] = round(time.time() - start, 1)
    if "gemma" in profiles:
        t0 = time.time()
        model, tok = _write_gemma(hub)
        _write_gemma_saes(hub, model, tok)
        del model
        _write_gemma(hub, GEMMA_IT_REPO, GEMMA_CHAT_TEMPLATE, seed=1)  # instruction-tuned
        _write_dataset(root, PROFILES["gemma"].dataset, fmt="jsonl.zst")
        seconds["gemma"] = round(time.time() - t0, 1)
    info = {
        "seconds": round(time.time() - start, 1),
        "profiles": list(profiles),
        **{f"seconds_{p}": t for p, t in seconds.items()},
    }
    (root / "DONE").write_text(json.dumps(info))


if __name__ == "__main__":
    _build(Path(sys.argv[1]), tuple(sys.argv[2:]))
