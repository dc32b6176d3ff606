"""The tiny world's language model: a 2-layer attention + MLP transformer trained with PyTorch.

The model is a TransformerLens ``HookedSAETransformer`` built from a config (no hub), so every
hook and SAE utility of TransformerLens and SAELens works on it unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Int
from sae_lens import HookedSAETransformer
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from saebook.errors import MissingArtifactError
from saebook.files import atomic_write_dir

__all__ = [
    "ARCHITECTURE",
    "TrainConfig",
    "new_model",
    "train_language_model",
    "save_model",
    "load_model",
    "ngram_baselines",
    "mean_loss",
]

#: Everything about the architecture except the vocabulary size (the tokenizer's).
ARCHITECTURE: dict = dict(
    n_layers=2,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    n_ctx=128,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
    model_name="saebook-tiny",
    default_prepend_bos=True,
)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def new_model(tokenizer_dir: Path, seed: int = 0, **overrides) -> HookedSAETransformer:
    """A freshly initialised model whose vocabulary is the tokenizer's at ``tokenizer_dir``.

    ``overrides`` replace entries of :data:`ARCHITECTURE` (the micro build uses them).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = HookedTransformerConfig(
        **{**ARCHITECTURE, **overrides}, d_vocab=len(tokenizer), seed=seed, device="cpu"
    )
    return HookedSAETransformer(cfg, tokenizer=tokenizer)


@dataclass
class TrainConfig:
    """Optimisation settings of :func:`train_language_model`."""

    steps: int = 7500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    repeat_fraction: float = 0.25  # share of rows that are a random span, tiled
    seed: int = 0

    @property
    def repeat_rows_per_batch(self) -> int:
        """Rows of each batch that are repeated random spans."""
        return round(self.batch_size * self.repeat_fraction)

    @property
    def story_rows_needed(self) -> int:
        """Corpus rows one training run consumes."""
        return self.steps * (self.batch_size - self.repeat_rows_per_batch)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _repeat_rows(
    n: int,
    seq_len: int,
    token_pool: Tensor,
    bos: int,
    generator: torch.Generator,
    span: tuple[int, int] = (8, 63),
) -> Tensor:
    """Rows ``BOS, x, x, x, ...``: a random span ``x`` of pool tokens, tiled to ``seq_len``.

    The span length is drawn per row from ``span`` (inclusive). With a fixed length the model
    learns a positional shortcut (attend a fixed distance back) instead of an induction head,
    which then fails on copies of any other length.
    """
    rows = torch.empty(n, seq_len, dtype=torch.long)
    rows[:, 0] = bos
    lengths = torch.randint(span[0], span[1] + 1, (n,), generator=generator)
    for i, length in enumerate(lengths.tolist()):
        x = token_pool[torch.randint(0, token_pool.numel(), (length,), generator=generator)]
        rows[i, 1:] = x.repeat(seq_len // length + 1)[: seq_len - 1]
    return rows


def train_language_model(
    model: HookedSAETransformer,
    train_tokens: Int[Tensor, "rows seq"],
    token_pool: Int[Tensor, " pool"],
    cfg: TrainConfig,
    log_every: int = 50,
    on_log: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` on next-token prediction over ``train_tokens`` rows (one pass, in order).

    A ``cfg.repeat_fraction`` share of each batch is replaced by repeated random spans of
    ``token_pool`` tokens: stories alone do not make a generic induction head form within a
    CPU budget. Returns the logged curve: dicts with ``step``, ``tokens``, ``loss``, ``lr``.
    """
    if train_tokens.ndim != 2:
        raise ValueError(f"train_tokens must be 2-D (rows, seq), got {tuple(train_tokens.shape)}")
    if train_tokens.shape[0] < cfg.story_rows_needed:
        raise ValueError(
            f"train_tokens must have at least {cfg.story_rows_needed} rows for {cfg.steps} "
            f"steps of {cfg.batch_size}, got {train_tokens.shape[0]}"
        )
    generator = torch.Generator().manual_seed(cfg.seed)
    bos = model.tokenizer.bos_token_id
    seq_len = train_tokens.shape[1]
    n_repeat = cfg.repeat_rows_per_batch
    n_story = cfg.batch_size - n_repeat
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_" in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_" in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    model.train()
    curve: list[dict] = []
    running = 0.0
    bar = tqdm(range(cfg.steps), desc="Training the tiny model", unit="step")
    for step in bar:
        rows = train_tokens[step * n_story : (step + 1) * n_story]
        if n_repeat:
            rows = torch.cat([rows, _repeat_rows(n_repeat, seq_len, token_pool, bos, generator)])
        logits = model(rows)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), rows[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            n = (step % log_every) + 1
            entry = {
                "step": step + 1,
                "tokens": (step + 1) * cfg.batch_size * seq_len,
                "loss": running / n,
                "lr": scheduler.get_last_lr()[0],
            }
            curve.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            if on_log is not None:
                on_log(entry)
            running = 0.0
    model.eval()
    return curve


@torch.no_grad()
def mean_loss(
    model: HookedSAETransformer, tokens: Int[Tensor, "rows seq"], batch_size: int = 32
) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over all positions of ``tokens``."""
    total, count = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        rows = tokens[start : start + batch_size]
        losses = model(rows, return_type="loss", loss_per_token=True)
        total += float(losses.sum())
        count += losses.numel()
    return total / count


def ngram_baselines(
    train_tokens: Int[Tensor, "rows seq"], val_tokens: Int[Tensor, "rows seq"], d_vocab: int
) -> dict[str, float]:
    """Validation cross-entropy (nats) of add-one-smoothed unigram and bigram models.

    Both are fitted on ``train_tokens`` and scored on the same positions a language model
    predicts (every token after the first of each row).
    """
    uni = torch.bincount(train_tokens[:, 1:].flatten(), minlength=d_vocab).double() + 1
    uni_lp = (uni / uni.sum()).log()
    pairs = train_tokens[:, :-1] * d_vocab + train_tokens[:, 1:]
    bi = (
        torch.bincount(pairs.flatten(), minlength=d_vocab * d_vocab).double().view(d_vocab, d_vocab)
    )
    bi_lp = ((bi + 1) / (bi + 1).sum(-1, keepdim=True)).log()
    prev, nxt = val_tokens[:, :-1].flatten(), val_tokens[:, 1:].flatten()
    return {
        "unigram": float(-uni_lp[nxt].mean()),
        "bigram": float(-bi_lp[prev, nxt].mean()),
    }


def save_model(model: HookedSAETransformer, directory: Path) -> None:
    """Write the weights (safetensors) and the architecture (JSON) to ``directory`` atomically."""
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a HookedTransformer, got {type(model).__name__}")
    arch = {k: getattr(model.cfg, k) for k in (*ARCHITECTURE, "d_vocab", "seed")}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_write_dir(directory) as tmp:
        save_file(state, str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(arch, indent=2))


def load_model(directory: Path, tokenizer_dir: Path, device: str = "cpu") -> HookedSAETransformer:
    """Load a model saved by :func:`save_model`, with the tokenizer at ``tokenizer_dir``."""
    directory = Path(directory)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"model directory {directory} has no {name}; "
                "rebuild the tiny world with `python -m saebook.tinyworld build`"
            )
    try:
        arch = json.loads((directory / CONFIG_FILE).read_text())
        state = load_file(str(directory / MODEL_FILE), device=device)
    except Exception as err:  # corrupt JSON or safetensors
        raise MissingArtifactError(
            f"model directory {directory} must hold the {CONFIG_FILE} and {MODEL_FILE} written "
            f"by save_model, got an unreadable file ({type(err).__name__}: {err}); "
            "rebuild the tiny world with `python -m saebook.tinyworld build`"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = HookedTransformerConfig(**arch, device=device)
    model = HookedSAETransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(state)
    model.eval()
    return model
