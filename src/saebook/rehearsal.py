"""A fabricated, offline Hugging Face cache for rehearsing the hub profiles at real shapes.

The ``gpt2`` profile downloads gpt2-small, SAELens' pretrained SAEs and a text dataset from the
Hugging Face hub. To exercise that code path without a network (tests, ``make rehearse``),
:func:`fabricate` writes a hub cache holding:

- gpt2-small: its real ``config.json``, random weights of the real shapes and key names
  (``GPT2LMHeadModel`` saved by ``transformers``), and a byte-level BPE tokenizer of vocabulary
  50257 with ``<|endoftext|>`` = 50256, built with ``tokenizers``;
- every SAELens release the profile names, in the file layout SAELens' loaders read
  (``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors`` for the SAELens-format
  releases, ``*.pt`` + ``*_cfg.json`` for ``gpt2-small-hook-z-kk``), with random weights whose
  encoder biases are calibrated on the fabricated model so about :data:`TARGET_L0` latents fire;
- the profile's text dataset as the prepared ``datasets`` cache entry that ``load_dataset``
  streams from when offline (synthetic English-like documents).

Loading then runs through the real code (``HookedSAETransformer.from_pretrained``,
``SAE.from_pretrained``, ``datasets.load_dataset``) with :func:`offline_env` set. The cache is
keyed on the versions of the libraries that write and read it, so a cache built once is reused
until a pin changes. Weights are random: content checks fail on them by design; the rehearsal
finds failures of the code (shapes, memory, devices, token layout).
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
from importlib import metadata
from pathlib import Path

import torch

__all__ = [
    "TARGET_L0",
    "GPT2_CONFIG",
    "cache_key",
    "fabricate",
    "offline_env",
    "byte_level_tokenizer",
    "synthetic_documents",
]

TARGET_L0 = 40  # latents firing per token on average in the fabricated SAEs
COMMIT = hashlib.sha1(b"saebook-rehearsal").hexdigest()  # the fake revision every repo is at
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub",
              "datasets", "sae-lens", "transformer-lens", "pyarrow")
FORMAT_VERSION = "1"  # bump when this module writes a different cache

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


def cache_key() -> str:
    """A short hash of this module's format and the installed versions of the libraries."""
    versions = []
    for name in _LIBRARIES:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}==absent")
    text = ";".join([FORMAT_VERSION, *versions])
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
    # token, as names are on gpt2), then every word at the start of a text
    for text in [" " + w for w in _WORDS] + list(_WORDS):
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
def _random_sae(
    d_in: int, d_sae: int, acts: torch.Tensor, seed: int
) -> dict[str, torch.Tensor]:
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
        blocks[5].attn.c_proj.register_forward_pre_hook(
            lambda m, args: seen.__setitem__("blocks.5.attn.hook_z", args[0])
        ),
    ]
    try:
        with torch.inference_mode():
            model(tokens)
    finally:
        for h in handles:
            h.remove()
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
            cfg = {"act_size": 768, "dict_size": d_sae, "act_name": hook, "layer": layer,
                   "site": "z", "model_name": "gpt2-small", "seq_len": 128}
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


# --------------------------------------------------------------------------- dataset
def _write_dataset(root: Path, repo_id: str, n_docs: int = 400) -> None:
    """Write the dataset cache entry ``datasets`` falls back to offline for ``repo_id``.

    Offline, ``load_dataset(repo_id)`` looks for a dataset prepared earlier under
    ``$HF_DATASETS_CACHE/<namespace>___<name>/<config>/<version>/<hash>/`` and streams its
    arrow file. The entry is prepared from a parquet file of :func:`synthetic_documents` by
    ``datasets``' own parquet builder, then moved to the name the repo id maps to.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    source = root / "source" / f"{name}-train.parquet"
    source.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": synthetic_documents(n_docs, seed=0)}), source)
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    builder = Parquet(
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

    The root is ``base/<cache_key()>``; a finished build leaves a ``DONE`` file, and a root
    that has one is returned at once. The build runs in a child Python process started with
    :func:`offline_env` (``huggingface_hub`` reads its cache location at import), so it
    works from a process that has already imported the Hugging Face libraries. Pass the root
    to :func:`offline_env` to load from it.
    """
    if not profiles or set(profiles) - {"gpt2"}:
        raise ValueError(f"profiles must be a non-empty subset of ('gpt2',), got {profiles!r}")
    root = Path(base).resolve() / cache_key()
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
    model, tok = _write_gpt2(hub)
    _write_gpt2_saes(hub, model, tok)
    del model
    _write_dataset(root, PROFILES["gpt2"].dataset)
    info = {"seconds": round(time.time() - start, 1), "profiles": list(profiles)}
    (root / "DONE").write_text(json.dumps(info))


if __name__ == "__main__":
    _build(Path(sys.argv[1]), tuple(sys.argv[2:]))
