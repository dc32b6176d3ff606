"""Bad inputs to saebook's public functions: each is refused with an error that names the
argument, what was expected and what was given.

The table ``ROWS`` holds one :class:`Bad` per case: a callable taking a :class:`Ctx` (the
micro world's model and SAEs, small tokens, a fresh output folder), the exception type it
must raise and three regexes the message must contain (``arg``, ``expected``, ``got``).
Messages follow ``<arg> must be <expected>, got <actual>`` unless a row says otherwise
(``form=False``, for errors about files). Every row runs under a per-row timeout, and a row
that writes files (``writes=True``) must leave its output folder as it found it.

A new module adds its rows by appending ``Bad(...)`` entries to ``ROWS`` (one section per
module below). The session summary (conftest.py) prints how many rows were tried and how many
were rejected with a named error.
"""

from __future__ import annotations

import copy
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
import torch

from saebook import display, profiles, splitting
from saebook.attribution import ablation_effects, direct_logit_attribution
from saebook.dashboards import (
    density_histogram,
    latent_dashboard,
    latent_logits,
    neuronpedia_embed,
    top_logits,
)
from saebook.directions import check_latent, decoder_directions
from saebook.errors import MissingArtifactError, UnknownProfileError
from saebook.files import atomic_write_dir, atomic_write_text
from saebook.groundtruth import label_recovery
from saebook.induction import induction_report, repeated_tokens
from saebook.latent_stats import encode_at_hook, latent_activations, latent_stats
from saebook.metrics import explained_variance, reconstruction_metrics, sae_input_and_target
from saebook.notebook import setup
from saebook.tasks import make_task
from saebook.tinyworld import corpus_rows, label_tokens, labeled_batch
from saebook.tinyworld.model import load_model, save_model
from saebook.tinyworld.shipped import load_model_card, load_shipped
from saebook.tinyworld.tasks import code_recall_task
from saebook.tinyworld.tokenizer import load_tokenizer, train_tokenizer
from saebook.toy_models import (
    ToyModel,
    feature_probability_sweep,
    generate_batch,
    importance_weights,
)
from saebook.toy_saes import TopKSAE, cosine_similarity_matrix, match_features, topk_activation
from saebook.training import (
    activation_batches,
    collect_activations,
    train_topk_sae,
    train_transcoder,
)

ROW_TIMEOUT_S = 30  # generous: the slowest row takes about a second on a contended CPU


class RowTimeout(Exception):
    """A row ran past :data:`ROW_TIMEOUT_S` (a hang instead of an error)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`RowTimeout` in the main thread after ``seconds`` (SIGALRM)."""

    def on_alarm(signum, frame):
        raise RowTimeout(f"no error within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_SHARED: dict[str, object] = {}  # expensive context objects, built once per session


class Ctx:
    """What a row's callable gets: the micro world, small inputs and a fresh output folder."""

    def __init__(self, micro_world, micro_model, out: Path, monkeypatch) -> None:
        self.world = micro_world[0]
        self.model, self.saes, self.family = micro_model
        self.out = out
        self.monkeypatch = monkeypatch

    @property
    def sae(self):
        return self.saes["resid"]

    @cached_property
    def tokens(self) -> torch.Tensor:
        return corpus_rows(4, 16, seed=0, tokenizer=self.model.tokenizer)

    @property
    def stats(self):
        if "stats" not in _SHARED:
            _SHARED["stats"] = latent_stats(self.model, self.sae, self.tokens, progress=False)
        return _SHARED["stats"]

    @property
    def task(self):
        if "task" not in _SHARED:
            _SHARED["task"] = code_recall_task(self.model, n=2, seed=0)
        return _SHARED["task"]

    @property
    def nan_model(self):
        """A copy of the model whose embedding is NaN: every activation is NaN."""
        if "nan_model" not in _SHARED:
            model = copy.deepcopy(self.model)
            with torch.no_grad():
                model.W_E.fill_(float("nan"))
            _SHARED["nan_model"] = model
        return _SHARED["nan_model"]

    def foreign_sae(self, d_in: int | None = None, hook: str | None = None, d_sae: int = 16):
        """A fresh SAELens SAE reading ``hook`` (default: the resid SAE's) with width ``d_in``."""
        from sae_lens import StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata

        return StandardSAE(
            StandardSAEConfig(
                d_in=d_in or self.sae.cfg.d_in,
                d_sae=d_sae,
                metadata=SAEMetadata(hook_name=hook or self.sae.cfg.metadata.hook_name),
            )
        )

    def profile(self) -> profiles.Profile:
        """A Profile over the micro world (same code path as the tiny one, built in memory)."""
        tok = self.model.tokenizer
        return profiles.Profile(
            name="micro",
            description="micro world",
            model=self.model,
            saes=dict(self.saes),
            width_family=list(self.family),
            sizes=profiles.Sizes(seq_len=16, n_seqs=4, batch_size=4, gen_tokens=4, train_tokens=64),
            device="cpu",
            task_name="code_recall",
            _token_source=lambda n, s, seed: corpus_rows(n, s, seed=seed, tokenizer=tok),
        )

    def world_copy(self) -> Path:
        """A copy of the micro build under the output folder, to damage."""
        target = self.out / "world"
        shutil.copytree(self.world, target)
        return target


@dataclass(frozen=True)
class Bad:
    """One bad input: ``call(ctx)`` must raise ``error`` whose message matches all three regexes.

    ``arg`` names the argument, ``expected`` what it should have been, ``got`` what was given.
    ``form``: the message also reads ``... must ... got ...``. ``writes``: the call writes
    under ``ctx.out``, which must hold the same entries after the failure as before.
    """

    id: str
    call: Callable[[Ctx], object]
    error: type[BaseException]
    arg: str
    expected: str
    got: str
    form: bool = True
    writes: bool = False


def _damage(path: Path, text: str = "not a safetensors file") -> Path:
    path.write_text(text)
    return path


def _corrupt_sae(c: Ctx):
    world = c.world_copy()
    _damage(world / "saes" / "resid" / "sae_weights.safetensors")
    return load_shipped(world)


def _missing_sae_weights(c: Ctx):
    world = c.world_copy()
    (world / "saes" / "mlp" / "sae_weights.safetensors").unlink()
    return load_shipped(world)


def _corrupt_model_config(c: Ctx):
    world = c.world_copy()
    _damage(world / "model" / "config.json", "{not json")
    return load_model(world / "model", world / "tokenizer")


def _interrupted_dir_write(c: Ctx):
    with atomic_write_dir(c.out / "sae") as tmp:
        (tmp / "half.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt("interrupted")  # what Ctrl-C does half-way


T = torch.tensor
INF = float("inf")

ROWS: list[Bad] = [
    # --- profiles -----------------------------------------------------------------------------
    Bad("profiles.load unknown name", lambda c: profiles.load("gpt3"),
        UnknownProfileError, "profile", r"\['tiny', 'gpt2', 'gemma'\]", "'gpt3'"),
    Bad("profiles.load unknown $SAEBOOK_PROFILE",
        lambda c: (c.monkeypatch.setenv("SAEBOOK_PROFILE", "tiniest"), profiles.load()),
        UnknownProfileError, r"SAEBOOK_PROFILE", "'tiny'", "'tiniest'"),
    Bad("Profile.tokens n_seqs=0", lambda c: c.profile().tokens(0),
        ValueError, "n_seqs", "positive int", "got 0"),
    Bad("Profile.tokens seq_len > n_ctx", lambda c: c.profile().tokens(2, 10_000),
        ValueError, "seq_len", r"\[2, \d+\]", "10000"),
    Bad("Profile.tokens negative seq_len", lambda c: c.profile().tokens(2, -8),
        ValueError, "seq_len", r"\[2, \d+\]", "-8"),
    Bad("Profile.sae unknown role", lambda c: c.profile().sae("embedding"),
        KeyError, "role", "'attn'", "'embedding'"),
    Bad("Profile.task n=0", lambda c: c.profile().task(n=0),
        ValueError, r"\bn\b", ">= 1|positive", "got 0"),
    # --- notebook setup -----------------------------------------------------------------------
    Bad("setup unknown profile", lambda c: setup("gpt-5", show=False),
        UnknownProfileError, "profile", "'tiny'", "'gpt-5'"),
    Bad("setup SAEBOOK_THREADS=0",
        lambda c: (c.monkeypatch.setenv("SAEBOOK_THREADS", "0"), setup("tiny", show=False)),
        ValueError, "SAEBOOK_THREADS", "positive integer", "'0'"),
    # --- display ------------------------------------------------------------------------------
    Bad("configure_plotly unknown renderer", lambda c: display.configure_plotly("nope"),
        ValueError, "renderer", "one of|notebook", "'nope'"),
    Bad("show_table of an int", lambda c: display.show_table(42),
        TypeError, "df_or_rows", "DataFrame", "int"),
    Bad("glue with an empty name", lambda c: display.glue("", 1.0),
        ValueError, "name", "non-empty", "''"),
    # --- latent_stats -------------------------------------------------------------------------
    Bad("latent_stats SAE hook not in the model",
        lambda c: latent_stats(c.model, c.foreign_sae(hook="blocks.7.hook_resid_pre"), c.tokens),
        ValueError, "hook_name", "hook of the model", "blocks.7.hook_resid_pre"),
    Bad("latent_stats SAE d_in != hook width",
        lambda c: latent_stats(c.model, c.foreign_sae(d_in=7), c.tokens, progress=False),
        ValueError, r"d_in", r"width of hook .*\(\d+\)", "got 7"),
    Bad("latent_stats k > positions",
        lambda c: latent_stats(c.model, c.sae, c.tokens[:1, :3], k=50, progress=False),
        ValueError, r"\bk\b", r"at most the number of positions counted \(2\)", "got 50"),
    Bad("latent_stats empty batch",
        lambda c: latent_stats(c.model, c.sae, c.tokens[:0], progress=False),
        ValueError, "tokens", r"non-empty \(rows, seq\)", r"\(0, 16\)"),
    Bad("latent_stats float tokens",
        lambda c: latent_stats(c.model, c.sae, c.tokens.float(), progress=False),
        TypeError, "tokens", "integer dtype", "float32"),
    Bad("latent_stats 1-D tokens",
        lambda c: latent_stats(c.model, c.sae, c.tokens[0], progress=False),
        ValueError, "tokens", r"\(rows, seq\)", r"\(16,\)"),
    Bad("latent_stats tokens on the meta device",
        lambda c: latent_stats(c.model, c.sae, c.tokens.to("meta"), progress=False),
        ValueError, "tokens", "cpu or cuda", "meta"),
    Bad("latent_stats token ids >= d_vocab",
        lambda c: latent_stats(c.model, c.sae, c.tokens + 10**6, progress=False),
        ValueError, "tokens", r"\[0, \d+\)", r"got values in \[\d+, \d+\]"),
    Bad("latent_stats negative batch_size",
        lambda c: latent_stats(c.model, c.sae, c.tokens, batch_size=-4, progress=False),
        ValueError, "batch_size", "positive int", "-4"),
    Bad("latent_stats float k",
        lambda c: latent_stats(c.model, c.sae, c.tokens, k=2.5, progress=False),
        TypeError, r"\bk\b", r"\bint\b", "float 2.5"),
    Bad("latent_stats bin_range reversed",
        lambda c: latent_stats(c.model, c.sae, c.tokens, bin_range=(2.0, 1.0), progress=False),
        ValueError, "bin_range", "0 < lo < hi", r"\(2.0, 1.0\)"),
    Bad("encode_at_hook NaN activations",
        lambda c: encode_at_hook(c.nan_model, c.sae, c.tokens),
        ValueError, "activations at hook", "finite", "NaN or inf"),
    Bad("latent_activations latent out of range",
        lambda c: latent_activations(c.model, c.sae, c.tokens, latents=[0, 10**6]),
        IndexError, "latents", r"\[0, \d+\)", r"\[1000000\]"),
    Bad("latent_activations no latents",
        lambda c: latent_activations(c.model, c.sae, c.tokens, latents=[]),
        ValueError, "latents", "at least one", "empty"),
    Bad("LatentStats.top_examples latent = d_sae",
        lambda c: c.stats.top_examples(c.sae.cfg.d_sae),
        IndexError, "latent", r"\[0, \d+\)", r"got \d+"),
    Bad("LatentStats.dense threshold > 1", lambda c: c.stats.dense(threshold=2.0),
        ValueError, "threshold", r"\[0, 1\]", "2.0"),
    Bad("LatentStats.quantile_examples n_intervals=0",
        lambda c: c.stats.quantile_examples(0, n_intervals=0),
        ValueError, "n_intervals", "positive int", "got 0"),
    # --- directions ---------------------------------------------------------------------------
    Bad("check_latent float", lambda c: check_latent(c.sae, 1.5),
        TypeError, "latent", "int latent index", "float"),
    Bad("check_latent negative", lambda c: check_latent(c.sae, -1),
        IndexError, "latent", r"\[0, \d+\)", "-1"),
    Bad("decoder_directions latent out of range",
        lambda c: decoder_directions(c.model, c.sae, [3, c.sae.cfg.d_sae]),
        IndexError, "latents", r"\[0, \d+\)", r"got \[\d+\]"),
    # --- dashboards ---------------------------------------------------------------------------
    Bad("latent_logits latent as str", lambda c: latent_logits(c.model, c.sae, "3"),
        TypeError, "latent", "int", "str"),
    Bad("top_logits k=0", lambda c: top_logits(c.model, c.sae, 0, k=0),
        ValueError, r"\bk\b", r"\[1, \d+\]", "got 0"),
    Bad("top_logits k > d_vocab", lambda c: top_logits(c.model, c.sae, 0, k=10**7),
        ValueError, r"\bk\b", r"\[1, \d+\] \(d_vocab\)", "10000000"),
    Bad("latent_dashboard stats of another SAE",
        lambda c: latent_dashboard(c.model, c.saes["mlp"], c.tokens, c.stats, 0),
        ValueError, "stats", "this SAE", r"got stats of d_sae \d+"),
    Bad("latent_dashboard tokens of another shape",
        lambda c: latent_dashboard(c.model, c.sae, c.tokens[:2], c.stats, 0),
        ValueError, "tokens", r"\(4, 16\)", r"\(2, 16\)"),
    Bad("latent_dashboard negative context",
        lambda c: latent_dashboard(c.model, c.sae, c.tokens, c.stats, 0, context=(-1, 4)),
        ValueError, "context", "non-negative", r"\(-1, 4\)"),
    Bad("latent_dashboard negative n_top",
        lambda c: latent_dashboard(c.model, c.sae, c.tokens, c.stats, 0, n_top=-2),
        ValueError, "n_top", "int >= 0", "-2"),
    Bad("density_histogram of a tensor", lambda c: density_histogram(torch.zeros(3)),
        TypeError, "stats", "LatentStats", "Tensor"),
    Bad("neuronpedia_embed latent out of range",
        lambda c: neuronpedia_embed(c.sae, c.sae.cfg.d_sae + 5),
        IndexError, "latent", r"\[0, \d+\)", r"got \d+"),
    # --- metrics ------------------------------------------------------------------------------
    Bad("reconstruction_metrics SAE hook not in the model",
        lambda c: reconstruction_metrics(c.model, c.foreign_sae(hook="blocks.9.hook_mlp_out"),
                                         c.tokens),
        ValueError, "hook_name", "hook of the model", "blocks.9.hook_mlp_out"),
    Bad("reconstruction_metrics 1-D tokens",
        lambda c: reconstruction_metrics(c.model, c.sae, c.tokens[0]),
        ValueError, "tokens", r"\(rows, seq\)", r"\(16,\)"),
    Bad("reconstruction_metrics float tokens",
        lambda c: reconstruction_metrics(c.model, c.sae, c.tokens.float()),
        TypeError, "tokens", "integer dtype", "float32"),
    Bad("reconstruction_metrics SAE d_in != hook width",
        lambda c: reconstruction_metrics(c.model, c.foreign_sae(d_in=5), c.tokens),
        ValueError, "d_in", r"width of hook .*\(\d+\)", "got 5"),
    Bad("sae_input_and_target empty batch",
        lambda c: sae_input_and_target(c.model, c.sae, c.tokens[:0]),
        ValueError, "tokens", "non-empty", r"\(0, 16\)"),
    Bad("explained_variance shape mismatch",
        lambda c: explained_variance(torch.zeros(4, 3), torch.zeros(4, 2)),
        ValueError, "reconstruction", r"\(4, 3\)", r"\(4, 2\)"),
    Bad("explained_variance NaN target",
        lambda c: explained_variance(T([[float("nan"), 1.0], [0.0, 1.0]]), torch.zeros(2, 2)),
        ValueError, "target", "finite", "1 NaN or inf"),
    # --- attribution --------------------------------------------------------------------------
    Bad("direct_logit_attribution SAE hook not in the model",
        lambda c: direct_logit_attribution(c.model, c.foreign_sae(hook="blocks.5.hook_resid_pre"),
                                           c.task),
        ValueError, "hook_name", "hook of the model", "blocks.5.hook_resid_pre"),
    Bad("ablation_effects latent out of range",
        lambda c: ablation_effects(c.model, c.sae, c.task, latents=T([1, 10**6])),
        IndexError, "latents", r"\[0, \d+\)", "1000000"),
    Bad("ablation_effects chunk=0",
        lambda c: ablation_effects(c.model, c.sae, c.task, latents=T([1, 2]), chunk=0),
        ValueError, "chunk", "positive int", "got 0"),
    # --- tasks --------------------------------------------------------------------------------
    Bad("make_task no items", lambda c: make_task(c.model, "t", "d", []),
        ValueError, "items", r"at least one \(clean", r"got \[\]|got none|got 0"),
    Bad("make_task prompts of different lengths",
        lambda c: make_task(c.model, "t", "d", [("a b", "a b c d", " a", " b")]),
        ValueError, "prompts", "same token length", r"lengths \[\d+, \d+\]"),
    Bad("make_task empty prompt", lambda c: make_task(c.model, "t", "d", [("", "", " a", " b")]),
        ValueError, r"items\[0\] prompts", "non-empty", r"\(\'\', \'\'\)"),
    Bad("make_task multi-token answer",
        lambda c: make_task(c.model, "t", "d", [("a b", "a c", " zqxjvwk", " b")]),
        ValueError, "answer", "single token", r"' zqxjvwk' \(\d+ tokens"),
    Bad("make_task item not a 4-tuple",
        lambda c: make_task(c.model, "t", "d", [("a b", "a c", " a")]),
        ValueError, r"items\[0\]", r"\(clean, corrupted, answer, wrong\)",
        r"\('a b', 'a c', ' a'\)"),
    Bad("LogitDiffTask.logit_diff wrong rows",
        lambda c: c.task.logit_diff(torch.zeros(5, 3, c.model.cfg.d_vocab)),
        ValueError, "logits", r"1 x 2 rows", "got 5"),
    Bad("code_recall_task n=0", lambda c: code_recall_task(c.model, n=0),
        ValueError, r"\bn\b", ">= 1|positive", "got 0"),
    # --- training -----------------------------------------------------------------------------
    Bad("collect_activations unknown hook",
        lambda c: collect_activations(c.model, c.tokens, ["blocks.9.hook_resid_pre"],
                                      progress=False),
        KeyError, "hook_names", "hooks of the model", r"\['blocks.9.hook_resid_pre'\]"),
    Bad("collect_activations batch_size=0",
        lambda c: collect_activations(c.model, c.tokens, ["blocks.0.hook_resid_pre"],
                                      batch_size=0, progress=False),
        ValueError, "batch_size", "positive int", "got 0"),
    Bad("collect_activations float tokens",
        lambda c: collect_activations(c.model, c.tokens.float(), ["blocks.0.hook_resid_pre"],
                                      progress=False),
        TypeError, "tokens", "integer dtype", "float32"),
    Bad("activation_batches batch_size > rows",
        lambda c: next(activation_batches(torch.zeros(3, 2), batch_size=8)),
        ValueError, "batch_size", r"at most the number of rows \(3\)", "got 8"),
    Bad("activation_batches rows differ",
        lambda c: next(activation_batches(torch.zeros(3, 2), torch.zeros(4, 2), batch_size=2)),
        ValueError, "tensors", "share their first dimension", r"\[3, 4\]"),
    Bad("train_topk_sae k >= d_sae",
        lambda c: train_topk_sae(torch.zeros(64, 4), d_sae=8, k=8,
                                 metadata={"hook_name": "h"}, total_samples=64, batch_size=32),
        ValueError, r"\bk\b", r"smaller than d_sae \(8\)", "got 8"),
    Bad("train_topk_sae negative d_sae",
        lambda c: train_topk_sae(torch.zeros(64, 4), d_sae=-8, k=2,
                                 metadata={"hook_name": "h"}, total_samples=64, batch_size=32),
        ValueError, "d_sae", "positive int", "-8"),
    Bad("train_topk_sae NaN activations",
        lambda c: train_topk_sae(torch.full((64, 4), float("nan")), d_sae=8, k=2,
                                 metadata={"hook_name": "h"}, total_samples=64, batch_size=32),
        ValueError, "activations", "finite", "256 NaN or inf"),
    Bad("train_topk_sae 3-D activations",
        lambda c: train_topk_sae(torch.zeros(8, 8, 4), d_sae=8, k=2,
                                 metadata={"hook_name": "h"}, total_samples=64),
        ValueError, "activations", "2 dimensions", r"\(8, 8, 4\)"),
    Bad("train_transcoder metadata without hook_name_out",
        lambda c: train_transcoder(torch.zeros(64, 4), torch.zeros(64, 4), 8,
                                   {"hook_name": "h"}, total_samples=64),
        ValueError, "metadata", "'hook_name_out'", r"keys \['hook_name'\]"),
    Bad("train_topk_sae fewer samples than one batch",
        lambda c: train_topk_sae(torch.zeros(64, 4), d_sae=8, k=2,
                                 metadata={"hook_name": "h"}, total_samples=16, batch_size=32),
        ValueError, "total_samples", ">= 32", "got 16"),
    Bad("train_transcoder fewer samples than one batch",
        lambda c: train_transcoder(torch.zeros(64, 4), torch.zeros(64, 4), 8,
                                   {"hook_name": "h", "hook_name_out": "o"}, total_samples=64),
        ValueError, "total_samples", ">= 1024", "got 64"),
    Bad("train_transcoder inputs and targets differ in rows",
        lambda c: train_transcoder(torch.zeros(64, 4), torch.zeros(60, 4), 8,
                                   {"hook_name": "h", "hook_name_out": "o"}, total_samples=64),
        ValueError, "targets", r"64 rows", "got 60"),
    # --- groundtruth --------------------------------------------------------------------------
    Bad("label_recovery 1-D activations",
        lambda c: label_recovery(torch.zeros(5), {"x": torch.zeros(5, dtype=torch.bool)}),
        ValueError, "latent_acts", r"2-D \(positions, latents\)", r"\(5,\)"),
    Bad("label_recovery label of another length",
        lambda c: label_recovery(torch.zeros(5, 3), {"x": torch.zeros(4, dtype=torch.bool)}),
        ValueError, r"labels\['x'\]", r"\(5,\)", r"\(4,\)"),
    Bad("label_recovery NaN activations",
        lambda c: label_recovery(torch.full((5, 3), float("nan")),
                                 {"x": torch.zeros(5, dtype=torch.bool)}),
        ValueError, "latent_acts", "finite", "15 NaN or inf"),
    # --- induction ----------------------------------------------------------------------------
    Bad("repeated_tokens negative n_seqs",
        lambda c: repeated_tokens(-3, 4, T([5, 6, 7]), 0),
        ValueError, "n_seqs", ">= 1", "-3"),
    Bad("repeated_tokens empty pool",
        lambda c: repeated_tokens(2, 4, torch.zeros(0, dtype=torch.long), 0),
        ValueError, "token_pool", "non-empty 1-D", r"\(0,\)"),
    Bad("induction_report even length",
        lambda c: induction_report(c.model, c.tokens[:, :10]),
        ValueError, "tokens", r"1 \+ 2 \* half_len", r"\(4, 10\)"),
    # --- checks -------------------------------------------------------------------------------
    Bad("check_function no cases",
        lambda c: __import__("saebook.checks").checks.check_function(abs, abs, []),
        ValueError, "cases", "at least one", "none"),
    # --- toy models ---------------------------------------------------------------------------
    Bad("importance_weights negative size", lambda c: importance_weights(-3),
        ValueError, "n_features", "positive int", "-3"),
    Bad("importance_weights decay 0", lambda c: importance_weights(5, decay=0.0),
        ValueError, "decay", r"\(0, 1\]", "0.0"),
    Bad("feature_probability_sweep min > max",
        lambda c: feature_probability_sweep(3, 0.9, 0.1),
        ValueError, "min_probability", "<= max_probability", "min_probability=0.9"),
    Bad("generate_batch 2-D probabilities",
        lambda c: generate_batch(4, torch.ones(2, 2) * 0.1, 5),
        ValueError, "feature_probability", r"\(instances,\)", r"\(2, 2\)"),
    Bad("ToyModel zero hidden", lambda c: ToyModel(5, 0),
        ValueError, "n_hidden", "positive int", "got 0"),
    Bad("ToyModel wrong rank input", lambda c: ToyModel(5, 2)(torch.zeros(4, 5)),
        ValueError, r"\bx\b", r"\(batch, 1, 5\)", r"\(4, 5\)"),
    # --- toy SAEs -----------------------------------------------------------------------------
    Bad("topk_activation k > d_sae", lambda c: topk_activation(torch.zeros(2, 4), 5),
        ValueError, r"\bk\b", "at most d_sae = 4", "got 5"),
    Bad("TopKSAE k=0", lambda c: TopKSAE(4, 8, k=0),
        ValueError, r"\bk\b", "positive int", "got 0"),
    Bad("cosine_similarity_matrix widths differ",
        lambda c: cosine_similarity_matrix(torch.zeros(2, 3), torch.zeros(2, 4)),
        ValueError, r"a and b", "same d", r"\(2, 3\) and \(2, 4\)"),
    Bad("match_features unknown method",
        lambda c: match_features(torch.eye(3), torch.eye(3), method="best"),
        ValueError, "method", "'hungarian' or 'greedy'", "'best'"),
    # --- tiny world ---------------------------------------------------------------------------
    Bad("corpus_rows n_seqs=0", lambda c: corpus_rows(0, 8, tokenizer=c.model.tokenizer),
        ValueError, "n_seqs", "positive int", "got 0"),
    Bad("labeled_batch seq_len=1", lambda c: labeled_batch(2, 1, tokenizer=c.model.tokenizer),
        ValueError, "seq_len", ">= 2", "got 1"),
    Bad("label_tokens a str", lambda c: label_tokens("a cat"),
        TypeError, "token_strs", "list of str", "str"),
    Bad("load_tokenizer missing folder", lambda c: load_tokenizer(c.out / "nowhere"),
        FileNotFoundError, "nowhere", "tokenizer", "python -m saebook.tinyworld build",
        form=False),
    Bad("load_shipped missing folder", lambda c: load_shipped(c.out / "nowhere"),
        MissingArtifactError, "tokenizer", "nowhere", "python -m saebook.tinyworld build",
        form=False),
    Bad("load_shipped corrupt SAE weights", _corrupt_sae,
        MissingArtifactError, "'resid' SAE", r"sae_weights\.safetensors|SafetensorError",
        "rebuild", form=False),
    Bad("load_shipped missing SAE weights", _missing_sae_weights,
        MissingArtifactError, "'mlp' SAE", r"saes/mlp", "rebuild", form=False),
    Bad("load_model corrupt config", _corrupt_model_config,
        MissingArtifactError, r"config\.json", "JSON|json", "rebuild", form=False),
    Bad("load_model_card missing", lambda c: load_model_card(c.out),
        MissingArtifactError, r"model_card\.json", "missing", "rebuild", form=False),
    # --- writers: a failure leaves nothing behind ---------------------------------------------
    Bad("train_tokenizer non-str text",
        lambda c: train_tokenizer(["a b c"] * 5 + [7], 300, c.out / "tokenizer"),
        TypeError, r"texts\[5\]", r"\bstr\b", "int", writes=True),
    Bad("train_tokenizer tiny vocab",
        lambda c: train_tokenizer(["a b c"] * 5, 10, c.out / "tokenizer"),
        ValueError, "vocab_size", r">= \d+", "got 10", writes=True),
    Bad("save_model of a non-model", lambda c: save_model("gpt2", c.out / "model"),
        TypeError, "model", "HookedTransformer", "str", writes=True),
    Bad("atomic_write_text bytes", lambda c: atomic_write_text(c.out / "card.json", b"{}"),
        TypeError, "text", r"\bstr\b", "bytes", writes=True),
    Bad("atomic_write_dir interrupted", _interrupted_dir_write,
        KeyboardInterrupt, "interrupted", "", "", form=False, writes=True),
    # --- feature splitting --------------------------------------------------------------------
    Bad("split_tree width family of one member",
        lambda c: splitting.split_tree(c.family[:1], 0),
        ValueError, "saes", "at least two", "got 1"),
    Bad("split_tree latent out of range",
        lambda c: splitting.split_tree(c.family, c.family[0].cfg.d_sae),
        ValueError, "latent", r"\[0, \d+\)", r"got \d+"),
    Bad("split_tree threshold 1.5",
        lambda c: splitting.split_tree(c.family, 0, threshold=1.5),
        ValueError, "threshold", r"\[0, 1\)", "1.5"),
]  # fmt: skip


def test_rows_have_unique_ids_and_enough_coverage():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    assert len(ROWS) >= 40


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_refused_with_a_named_error(
    row: Bad, micro_world, micro_model, tmp_path, monkeypatch, record_property
):
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    ctx = Ctx(micro_world, micro_model, out, monkeypatch)
    monkeypatch.setenv("SAEBOOK_THREADS", "1")
    raised: BaseException | None = None
    record_property("bad_input", "tried")
    try:
        with time_limit(ROW_TIMEOUT_S):
            row.call(ctx)
    except RowTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt is a row's expected error
        raised = exc
    if raised is None:
        pytest.fail(f"{row.id}: no error was raised (silently accepted)")
    message = str(raised.args[0]) if isinstance(raised, KeyError) and raised.args else str(raised)
    assert isinstance(raised, row.error), (
        f"{row.id}: expected {row.error.__name__}, got {type(raised).__name__}: {message}"
    )
    for what, pattern in (("argument", row.arg), ("expected", row.expected), ("got", row.got)):
        assert re.search(pattern, message), (
            f"{row.id}: message lacks the {what} /{pattern}/: {message}"
        )
    if row.form:
        assert re.search(r"\bmust\b.*\bgot\b", message, re.S), (
            f"{row.id}: message is not '<arg> must be <expected>, got <actual>': {message}"
        )
    if row.writes:
        after = sorted(p.relative_to(out) for p in out.rglob("*"))
        assert after == before, f"{row.id}: left files behind after failing: {after}"
    record_property("bad_input", "rejected")
