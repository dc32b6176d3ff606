"""Performance benchmarks of saebook's techniques. Run: ``.venv/bin/python benchmarks/run.py``.

Prints a table per measurement and ends with one ``name=value (target ...: met|NOT met)``
line per ratio and workload (the targets are in ``TARGETS``):

- ``stats_vs_forward``: time of ``latent_stats`` (all latents) / time of the bare work it
  cannot avoid (forward to the SAE's hook + SAE encode over the same tokens).
- ``stats_vs_per_latent``: a naive loop that runs the model once per latent, for 64 latents,
  / ``latent_stats``.
- ``stats_peak_mem_growth``: rise of the resident-memory peak of a fresh process running
  ``latent_stats`` on 4x the tokens / on 1x (flat is 1; Linux, via ``/proc/self``).
- ``attribution_vs_ablation_speed``, ``attribution_ablation_spearman``,
  ``attribution_ablation_slope``: attribution patching (one backward pass) against exact
  ablation of every latent active at the last position: speed-up, rank correlation, and the
  least-squares slope of estimate on exact effect (the scale; 1 is right).
- ``topk_step_vs_saelens``: time of one TopK training step (forward, backward, Adam; 1% of
  the latents dead, so the aux-k loss runs) of SAELens' ``TopKTrainingSAE`` / of
  ``GatheredTopKTrainingSAE``, which ``train_topk_sae`` uses, at the workload SAE's shape; the
  table also shows the largest difference of the two losses on the same weights and batch.
- scale curve: engine time and peak memory at 1x, 4x, 16x tokens (``time_growth_16x_tokens``:
  linear is 16; ``mem_growth_16x_tokens``: flat is 1) and time at 1x, 4x ``d_sae`` (its
  log-log slope is printed).
- ``dashboards_vs_sae_dashboard_64`` / ``_all``: sae-dashboard 0.8's runner producing its data
  for 64 live latents / every latent, over our engine pass plus one HTML page per latent
  written to disk (``write_dashboards``), same weights, SAE and tokens. sae-dashboard runs in
  a separate virtualenv with pinned packages (``benchmarks/sidevenv.py``), built on first use
  and reused after; when it cannot be built or run the benchmark exits non-zero saying why
  (``--skip-sae-dashboard`` leaves it out on purpose).

Each ratio is measured on the tiny profile and on a gpt2-shaped model with random weights
(12 layers, d_model 768, a TopK SAE of width 24576 at ``blocks.8.hook_resid_pre``). Timings
are the best of a few repeats on this machine; another heavy process on the same cores slows
everything, so compare the ratios (each measured side by side), not the seconds.

Options: ``--quick`` (fewer tokens and repeats), ``--only tiny|gpt2``, ``--skip-sae-dashboard``,
``--max-latents N`` (cap the all-latent comparison), ``--skip-scale``, ``--full-sae-dashboard``
(sae-dashboard's all-latent time measured on every latent rather than on a random sample of
one feature batch, 2048, scaled up: see :func:`measure_sae_dashboard`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from scipy.stats import spearmanr
from sidevenv import SideVenvError, run_in_venv

from saebook.attribution import ablation_effects, attribution_patching
from saebook.dashboards import CONTEXT, write_dashboards
from saebook.latent_stats import encode_at_hook, latent_stats
from saebook.training import GatheredTopKTrainingSAE

N_LATENTS_NAIVE = 64
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------


def tiny_workload(rows: int, seq_len: int | None = None):
    """(model, sae, tokens, batch_size) on the tiny profile's residual SAE."""
    from saebook import profiles

    profile = profiles.load("tiny", device="cpu")
    tokens = profile.tokens(rows, seq_len, seed=7)
    return profile.model, profile.sae("resid"), tokens, 32


def tiny_task(model, n: int):
    """The tiny profile's own task: code recall, which its model solves."""
    from saebook import profiles

    return profiles.load("tiny", device="cpu").task(n=n, seed=3)


def random_task(model, n: int, seq_len: int = 16):
    """Random prompts with random answer/wrong tokens: a task shape for random weights."""
    from saebook.tasks import LogitDiffTask

    gen = torch.Generator().manual_seed(5)
    clean = torch.randint(0, model.cfg.d_vocab, (n, seq_len), generator=gen)
    answer, wrong = torch.randint(0, model.cfg.d_vocab, (2, n), generator=gen)
    return LogitDiffTask("random", "random tokens", clean, clean.clone(), answer, wrong, [])


def gpt2_workload(rows: int, seq_len: int = 32):
    """(model, sae, tokens, batch_size): gpt2-small's shape with random weights."""
    from sae_lens import HookedSAETransformer, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
        n_ctx=1024, act_fn="gelu_new", normalization_type="LN", device="cpu",
        model_name="gpt2-shaped-random",
    )  # fmt: skip
    model = HookedSAETransformer(cfg)
    model.eval()
    sae_cfg = TopKSAEConfig(  # decoder-norm rescaling: sae-dashboard folds W_dec norms
        d_in=768, d_sae=24576, k=32, rescale_acts_by_decoder_norm=True,
        metadata=SAEMetadata(hook_name="blocks.8.hook_resid_pre", model_name=cfg.model_name),
    )  # fmt: skip
    sae = TopKSAE(sae_cfg)
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, cfg.d_vocab, (rows, seq_len), generator=gen)
    return model, sae, tokens, 4


WORKLOADS: dict[str, Callable] = {"tiny": tiny_workload, "gpt2": gpt2_workload}
TASKS: dict[str, Callable] = {"tiny": tiny_task, "gpt2": random_task}
TASK_PROMPTS = {"tiny": 16, "gpt2": 4}
ROWS = {"tiny": 256, "gpt2": 8}  # 1x (several batches each); the memory test also runs 4x
QUICK_ROWS = {"tiny": 64, "gpt2": 8}


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def forward_and_encode(model, sae, tokens, batch_size: int) -> None:
    """The baseline: the same batches, forward to the hook and encode, nothing kept."""
    for start in range(0, tokens.shape[0], batch_size):
        encode_at_hook(model, sae, tokens[start : start + batch_size])


@torch.no_grad()
def naive_per_latent(model, sae, tokens, batch_size: int, latents: list[int], k: int = 20,
                     n_samples: int = 40, n_bins: int = 40) -> None:  # fmt: skip
    """What a dashboard loop without the engine does: one pass of the model per latent,
    collecting that latent's activations, then its count, sum, max, histogram, top-k and a
    random sample."""
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    gen = torch.Generator().manual_seed(0)
    for latent in latents:
        rows = []
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start : start + batch_size]
            acts = encode_at_hook(model, sae, batch)[..., latent]
            keep = batch != bos if bos is not None else torch.ones_like(batch, dtype=torch.bool)
            if bos is None:
                keep[:, 0] = False
            rows.append(acts * keep)
        acts = torch.cat(rows).flatten()
        fired = acts > 0
        values = acts[fired]
        _ = int(fired.sum()), float(values.sum()), acts.max()
        if values.numel():
            edges = torch.logspace(-3, 2, n_bins + 1)
            torch.bucketize(values, edges[1:-1]).bincount(minlength=n_bins)
            acts.topk(min(k, acts.numel()))
            picks = torch.randperm(values.numel(), generator=gen)[:n_samples]
            torch.nonzero(fired).flatten()[picks]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rise_mb(fn: Callable[[], object]) -> float:
    """How far the process's resident memory rises above its level before ``fn`` (MB).

    Freed heap memory is first returned to the OS (``malloc_trim``) and the kernel's peak
    counter (``VmHWM``) is reset through ``/proc/self/clear_refs``, so the peak read after
    ``fn`` is the peak of ``fn`` itself. Linux only.
    """
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    fn()
    return (_status_kb("VmHWM") - before) / 1024


@cache  # the engine's 1x/4x memory and the scale curve's 1x/4x are the same runs
def child_peak(name: str, rows: int) -> dict:
    """Run latent_stats on ``rows`` rows in a fresh process and report its peak memory rise."""
    code = (
        "import json, sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import run\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"model, sae, tokens, bs = run.WORKLOADS[{name!r}]({rows})\n"
        "run.forward_and_encode(model, sae, tokens[:1], 1)  # load lazy modules first\n"
        "box = {}\n"
        "def go():\n"
        "    box['s'] = run.latent_stats(model, sae, tokens, batch_size=bs, progress=False)\n"
        "rise = run.peak_rise_mb(go)\n"
        "print(json.dumps({'rise_mb': rise, 'buffers_mb': box['s'].peak_buffer_bytes / 2**20,"
        " 'tokens': tokens.numel()}))\n"
    )
    # glibc serves large blocks with mmap and returns freed memory at once, so the resident
    # peak is the peak of live memory (with its default heap caching it varies by +-15%)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, rows: int, repeats: int) -> dict:
    model, sae, tokens, batch_size = WORKLOADS[name](rows)
    forward_and_encode(model, sae, tokens[:batch_size], batch_size)  # warm-up
    latent_stats(model, sae, tokens[: 2 * batch_size], batch_size=batch_size, progress=False)
    stats = None

    def baseline():
        forward_and_encode(model, sae, tokens, batch_size)

    def engine():
        nonlocal stats
        stats = latent_stats(model, sae, tokens, batch_size=batch_size, progress=False)

    # alternate the two, best of each: a burst of load elsewhere hits both alike
    t_forward = t_engine = float("inf")
    for _ in range(repeats):
        t_forward = min(t_forward, best_time(baseline, 1))
        t_engine = min(t_engine, best_time(engine, 1))
    live = torch.nonzero(stats.count > 0).flatten()
    latents = live[torch.randperm(live.numel(), generator=torch.Generator().manual_seed(0))]
    latents = latents[:N_LATENTS_NAIVE].tolist()
    t_naive = best_time(lambda: naive_per_latent(model, sae, tokens, batch_size, latents), 1)
    small = child_peak(name, rows)
    large = child_peak(name, 4 * rows)
    inc_small = max(small["rise_mb"], 1e-3)
    inc_large = max(large["rise_mb"], 1e-3)
    return {
        "model": name,
        "tokens": tokens.numel(),
        "forward_s": t_forward,
        "engine_s": t_engine,
        "stats_vs_forward": t_engine / t_forward,
        "naive_latents": len(latents),
        "naive_s": t_naive,
        "stats_vs_per_latent": t_naive / t_engine,
        "peak_inc_1x_mb": inc_small,
        "peak_inc_4x_mb": inc_large,
        "buffers_1x_mb": small["buffers_mb"],
        "buffers_4x_mb": large["buffers_mb"],
        "stats_peak_mem_growth": inc_large / inc_small,
    }


SAE_DASHBOARD_FEATURE_BATCH = 2048  # its logit tables take features x d_vocab floats per batch


def ours_dashboards(model, sae, tokens, batch_size: int, latents: list[int], folder: Path):
    """Our side of the comparison: the engine pass (keeping the examples' activation windows,
    so the pages need no second pass) plus every page written to ``folder``."""
    stats = latent_stats(model, sae, tokens, batch_size=batch_size, progress=False,
                         window=CONTEXT)  # fmt: skip
    write_dashboards(model, sae, tokens, stats, latents, folder, batch_size=batch_size)


def measure_sae_dashboard(
    name: str,
    rows: int,
    repeats: int,
    max_latents: int | None,
    sample: int | None = SAE_DASHBOARD_FEATURE_BATCH,
) -> dict:
    """sae-dashboard's runner vs our dashboards on the same model weights, SAE and tokens.

    Ours: :func:`latent_stats` (every latent, one pass) plus :func:`write_dashboards` (one HTML
    page per latent written to disk). Theirs (in its own virtualenv): ``SaeVisRunner.run``,
    which produces the data of its dashboards (no HTML), features in batches of
    ``SAE_DASHBOARD_FEATURE_BATCH``. Both on 64 live latents and on every latent of the SAE
    (the first ``max_latents`` when that is given).

    Ours always writes every latent's page. sae-dashboard's runner costs ~60 ms per latent on
    2 CPU cores (its per-feature Python loop), ~23 min for all 24,576 latents of the
    gpt2-shaped SAE, and keeps every latent's data in memory (killed by the kernel at 22.4 GB,
    ~11 min into that run, on a 24 GiB machine). So when there are more than ``sample``
    latents it is timed on a seeded random ``sample`` of them (live and dead in proportion)
    and its all-latent time is that time x ``n / sample``: exact for its batch structure
    (``n / sample`` feature batches of ``sample``, each the same work) up to the sample's
    spread; ``theirs_all_measured`` says how many latents it ran. ``sample=None`` runs it on
    every latent.
    """
    import tempfile

    model, sae, tokens, batch_size = WORKLOADS[name](rows)
    stats = latent_stats(model, sae, tokens, batch_size=batch_size, progress=False)
    live = torch.nonzero(stats.count > 0).flatten()
    latents = live[torch.randperm(live.numel(), generator=torch.Generator().manual_seed(0))]
    latents = latents[:N_LATENTS_NAIVE].tolist()
    many = min(sae.cfg.d_sae, max_latents or sae.cfg.d_sae)
    everything = list(range(many))
    theirs_all = everything
    if sample is not None and many > sample:
        pick = torch.randperm(many, generator=torch.Generator().manual_seed(1))[:sample]
        theirs_all = sorted(pick.tolist())
    sets = {"64": (latents, repeats), "all": (everything, 1)}
    ours = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ours_dashboards(model, sae, tokens, batch_size, latents[:4], folder / "warm")
        for key, (chosen, reps) in sets.items():
            ours[key] = best_time(
                lambda c=chosen, k=key: ours_dashboards(model, sae, tokens, batch_size, c,
                                                        folder / k),
                reps,
            )  # fmt: skip
            pages = list((folder / key).glob("latent_*.html"))
            if len(pages) != len(set(chosen)):
                raise RuntimeError(f"wrote {len(pages)} pages for {len(set(chosen))} latents")
        torch.save({"cfg": model.cfg.to_dict(), "state_dict": model.state_dict()},
                   folder / "model.pt")  # fmt: skip
        sae.save_model(str(folder / "sae"))
        theirs_sets = {"64": sets["64"], "all": (theirs_all, 1)}
        inputs = {"tokens": tokens, "latent_sets": theirs_sets, "batch_size": batch_size,
                  "feature_batch": SAE_DASHBOARD_FEATURE_BATCH}  # fmt: skip
        torch.save(inputs, folder / "inputs.pt")
        child = ROOT / "benchmarks" / "sae_dashboard_child.py"
        out = run_in_venv([str(child), str(folder), str(torch.get_num_threads())])
    theirs = json.loads(out.strip().splitlines()[-1])
    with torch.no_grad():
        expected = model(tokens[:1])[0, -1, :8]
    if not torch.allclose(torch.tensor(theirs["logits"]), expected, atol=1e-3):
        raise RuntimeError("the model rebuilt in sae-dashboard's environment differs from ours")
    seconds = theirs["seconds"]
    seconds["all"] *= many / len(theirs_all)  # 1 when it ran on every latent
    return {
        "model": name,
        "tokens": tokens.numel(),
        "d_sae": sae.cfg.d_sae,
        "all": many,
        "ours_64_s": ours["64"],
        "theirs_64_s": seconds["64"],
        "ours_all_s": ours["all"],
        "theirs_all_s": seconds["all"],
        "theirs_all_measured": len(theirs_all),
        "dashboards_vs_sae_dashboard_64": seconds["64"] / ours["64"],
        "dashboards_vs_sae_dashboard_all": seconds["all"] / ours["all"],
    }


def measure_attribution(name: str, repeats: int) -> dict:
    """Attribution patching (all latents, one backward pass) vs exact ablation of each
    latent active at the last position: time ratio, rank correlation and scale of the effects.

    ``attribution_patching`` gives each prompt's own estimate (truth-core's fix: the sum of
    the logit differences is back-propagated), so their mean over prompts estimates the
    change of the mean logit difference that ``ablation_effects`` measures exactly. The slope
    is the least-squares slope of estimate on exact effect (1 when the scale is right).
    """
    model, sae, _, _ = WORKLOADS[name](1)
    task = TASKS[name](model, TASK_PROMPTS[name])
    start = time.perf_counter()
    latents, ablation = ablation_effects(model, sae, task)
    t_first = time.perf_counter() - start
    # the slow side (one forward pass per latent, ~20x attribution): its first run and one
    # more, as its noise is small next to the ratio; the fast side gets every repeat
    t_ablation = min(t_first, best_time(lambda: ablation_effects(model, sae, task, latents), 1))
    t_attribution = best_time(lambda: attribution_patching(model, sae, task), repeats)
    estimate = attribution_patching(model, sae, task)[:, -1].mean(0)[latents].double()
    exact = ablation.double()
    centred = exact - exact.mean()
    slope = float((centred * (estimate - estimate.mean())).sum() / (centred**2).sum())
    return {
        "model": name,
        "latents": latents.numel(),
        "ablation_s": t_ablation,
        "attribution_s": t_attribution,
        "attribution_vs_ablation_speed": t_ablation / t_attribution,
        "attribution_ablation_spearman": float(spearmanr(ablation, estimate).statistic),
        "attribution_ablation_slope": slope,
        "attribution_norm_ratio": float(estimate.norm() / exact.norm()),
    }


def measure_training_step(name: str, repeats: int) -> dict:
    """Seconds per TopK training step, SAELens' class vs the gathered one, same weights
    (20 steps a repeat; 3 at gpt2's width, where a dense step takes about a second here)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    _, sae, _, _ = WORKLOADS[name](1)
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    k = int(getattr(sae.cfg, "k", 32))
    steps = 20 if d_sae <= 4096 else 3
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, rescale_acts_by_decoder_norm=False)
    g = torch.Generator().manual_seed(0)
    batches = torch.randn(steps, 256, d_in, generator=g)
    dead = torch.rand(d_sae, generator=g) < 0.01
    torch.manual_seed(0)
    saes = {"saelens": TopKTrainingSAE(cfg)}
    saes["gathered"] = GatheredTopKTrainingSAE(cfg)
    saes["gathered"].load_state_dict(saes["saelens"].state_dict())

    def loss(sae, x):
        return sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0,
            is_logging_step=False)).loss  # fmt: skip

    with torch.no_grad():
        gap = float(abs(loss(saes["saelens"], batches[0]) - loss(saes["gathered"], batches[0])))

    def run(sae):
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        for x in batches:
            loss(sae, x).backward()
            opt.step()
            opt.zero_grad()

    seconds = {key: best_time(lambda s=sae: run(s), repeats) / steps for key, sae in saes.items()}
    return {
        "model": name,
        "shape": f"{d_in}x{d_sae} k={k}",
        "saelens_ms": 1000 * seconds["saelens"],
        "gathered_ms": 1000 * seconds["gathered"],
        "loss_gap": gap,
        "topk_step_vs_saelens": seconds["saelens"] / seconds["gathered"],
    }


def wider_sae(sae, factor: int):
    """A random SAE of the same kind at the same hook with ``factor`` times the latents."""
    cfg = type(sae.cfg).from_dict({**sae.cfg.to_dict(), "d_sae": sae.cfg.d_sae * factor})
    wide = type(sae)(cfg)
    with torch.no_grad():  # realistic sparsity: tile the trained encoder, jitter the copies
        for attr in ("W_enc", "b_enc", "W_dec", "threshold", "b_gate", "r_mag", "b_mag"):
            old, new = getattr(sae, attr, None), getattr(wide, attr, None)
            if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
                dim = 0 if attr == "W_dec" else -1
                tiled = torch.cat([old] * factor, dim=dim) if old.ndim else old
                new.copy_(tiled * (1 + 0.01 * torch.randn_like(tiled)))
        for attr in ("b_dec",):
            getattr(wide, attr).copy_(getattr(sae, attr))
    return wide


def measure_scale(name: str, rows: int, repeats: int) -> dict:
    """Engine time and peak memory at 1x, 4x, 16x the tokens, and time at 1x, 4x d_sae."""
    model, sae, tokens, batch_size = WORKLOADS[name](16 * rows)
    latent_stats(model, sae, tokens[:batch_size], batch_size=batch_size, progress=False)
    out = {"model": name, "tokens": {}, "d_sae": {}}
    for factor in (1, 4, 16):
        part = tokens[: factor * rows]
        reps = repeats if factor < 16 else 1
        t = best_time(lambda p=part: latent_stats(model, sae, p, batch_size=batch_size,
                                                  progress=False), reps)  # fmt: skip
        mem = child_peak(name, factor * rows)
        out["tokens"][factor] = (part.numel(), t, mem["rise_mb"])
    part = tokens[:rows]
    for factor in (1, 4):
        wide = sae if factor == 1 else wider_sae(sae, factor)
        t = best_time(lambda w=wide: latent_stats(model, w, part, batch_size=batch_size,
                                                  progress=False), repeats)  # fmt: skip
        out["d_sae"][factor] = (wide.cfg.d_sae, t)
    (_, t1, m1), (_, t16, m16) = out["tokens"][1], out["tokens"][16]
    out["time_growth_16x_tokens"] = t16 / t1  # linear: 16
    out["mem_growth_16x_tokens"] = max(m16, 1e-3) / max(m1, 1e-3)  # flat: 1
    out["time_growth_4x_d_sae"] = out["d_sae"][4][1] / out["d_sae"][1][1]
    return out


TARGETS = {  # name: (comparison, bound, what it means)
    "stats_vs_forward": ("<=", 1.10, "engine time / forward+encode time"),
    "stats_vs_per_latent": (">=", 30.0, "per-latent loop (64 latents) / engine"),
    "stats_peak_mem_growth": ("<=", 1.5, "peak memory rise at 4x tokens / 1x"),
    "dashboards_vs_sae_dashboard_64": (">=", 2.0, "sae-dashboard runner / our engine+64 pages"),
    "dashboards_vs_sae_dashboard_all": (">=", 2.0, "sae-dashboard runner / engine+all pages"),
    "attribution_vs_ablation_speed": (">=", 1.0, "exact ablation / attribution patching"),
    "attribution_ablation_spearman": (">=", 0.5, "rank agreement with exact ablation"),
    "attribution_ablation_slope": ("in", (0.5, 2.0), "scale of estimate vs exact (ideal 1)"),
    "topk_step_vs_saelens": (">=", 1.2, "SAELens' TopK training step / the gathered step"),
    "time_growth_16x_tokens": ("in", (8.0, 24.0), "engine time at 16x tokens / 1x (linear: 16)"),
    "mem_growth_16x_tokens": ("<=", 1.5, "peak memory at 16x tokens / 1x (flat: 1)"),
}


def verdict(key: str, value: float) -> str:
    """``key=value (target ...: met|NOT met)``."""
    op, bound, _ = TARGETS[key]
    if op == "in":
        ok, text = bound[0] <= value <= bound[1], f"in [{bound[0]:g}, {bound[1]:g}]"
    elif op == "<=":
        ok, text = value <= bound, f"<= {bound:g}"
    else:
        ok, text = value >= bound, f">= {bound:g}"
    return f"{key}={value:.3f} (target {text}: {'met' if ok else 'NOT met'})"


def print_engine(results: list[dict]) -> None:
    header = (f"{'model':<6} {'tokens':>7} {'fwd+enc s':>9} {'engine s':>9} {'ratio':>6} "
              f"{'naive(n) s':>12} {'speedup':>8} {'peak+ 1x MB':>11} {'peak+ 4x MB':>11} "
              f"{'growth':>6}")  # fmt: skip
    print(f"latent statistics engine, torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, device cpu")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['model']:<6} {r['tokens']:>7} {r['forward_s']:>9.3f} {r['engine_s']:>9.3f} "
            f"{r['stats_vs_forward']:>6.2f} {r['naive_s']:>8.2f}({r['naive_latents']:>2}) "
            f"{r['stats_vs_per_latent']:>8.1f} {r['peak_inc_1x_mb']:>11.1f} "
            f"{r['peak_inc_4x_mb']:>11.1f} {r['stats_peak_mem_growth']:>6.2f}"
        )
    print()


def print_scale(scale: list[dict]) -> None:
    print("scale curve of the engine (time in s, peak = rise of a fresh process's RSS in MB)")
    for r in scale:
        cells = "  ".join(f"{f}x: {n} tok {t:.2f} s {m:.0f} MB"
                          for f, (n, t, m) in r["tokens"].items())  # fmt: skip
        print(f"{r['model']:<6} tokens  {cells}")
        cells = "  ".join(f"{f}x: d_sae {d} {t:.2f} s" for f, (d, t) in r["d_sae"].items())
        slope = math.log(r["time_growth_4x_d_sae"]) / math.log(4)
        print(f"{r['model']:<6} d_sae   {cells}  -> time ~ d_sae^{slope:.2f}")
    print()


def print_attribution(attribution: list[dict]) -> None:
    print("attribution patching (one backward pass) vs exact ablation of each active latent")
    print(f"{'model':<6} {'latents':>7} {'ablation s':>10} {'attrib s':>9} {'speedup':>8} "
          f"{'spearman':>8} {'slope':>6} {'|est|/|ex|':>10}")  # fmt: skip
    for r in attribution:
        print(f"{r['model']:<6} {r['latents']:>7} {r['ablation_s']:>10.3f} "
              f"{r['attribution_s']:>9.3f} {r['attribution_vs_ablation_speed']:>8.1f} "
              f"{r['attribution_ablation_spearman']:>8.3f} "
              f"{r['attribution_ablation_slope']:>6.3f} "
              f"{r['attribution_norm_ratio']:>10.3f}")  # fmt: skip
    print()


def print_training(training: list[dict]) -> None:
    print("one TopK training step (batch 256, 1% dead latents): SAELens' TopKTrainingSAE vs "
          "GatheredTopKTrainingSAE")  # fmt: skip
    print(f"{'model':<6} {'shape':>18} {'saelens ms':>10} {'gathered ms':>11} {'speedup':>8} "
          f"{'loss gap':>9}")  # fmt: skip
    for r in training:
        print(f"{r['model']:<6} {r['shape']:>18} {r['saelens_ms']:>10.2f} "
              f"{r['gathered_ms']:>11.2f} {r['topk_step_vs_saelens']:>8.2f} "
              f"{r['loss_gap']:>9.1e}")  # fmt: skip
    print()


def print_dashboards(dashboard: list[dict]) -> None:
    print("sae-dashboard 0.8 runner (its own virtualenv, data only) vs ours (engine pass + one "
          "HTML page per latent written), same weights/SAE/tokens")  # fmt: skip
    print(f"{'model':<6} {'tokens':>7} {'d_sae':>6} | {'theirs 64':>9} {'ours 64':>8} "
          f"{'ratio':>6} | {'latents':>7} {'theirs all':>10} {'ours all':>8} "
          f"{'ratio':>6}")  # fmt: skip
    for r in dashboard:
        print(f"{r['model']:<6} {r['tokens']:>7} {r['d_sae']:>6} | {r['theirs_64_s']:>9.2f} "
              f"{r['ours_64_s']:>8.2f} {r['dashboards_vs_sae_dashboard_64']:>6.2f} | "
              f"{r['all']:>7} {r['theirs_all_s']:>10.2f} {r['ours_all_s']:>8.2f} "
              f"{r['dashboards_vs_sae_dashboard_all']:>6.2f}")  # fmt: skip
        if r["theirs_all_measured"] < r["all"]:
            print(
                f"{'':<6} theirs all: timed on {r['theirs_all_measured']} random latents, "
                f"x {r['all'] / r['theirs_all_measured']:g} (--full-sae-dashboard times all)"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="one workload only")
    parser.add_argument("--skip-sae-dashboard", action="store_true",
                        help="do not build sae-dashboard's virtualenv or time it")  # fmt: skip
    parser.add_argument("--max-latents", type=int, default=None,
                        help="cap the all-latent comparison (default: every latent)")  # fmt: skip
    parser.add_argument("--skip-scale", action="store_true", help="no scale curve")
    parser.add_argument(
        "--full-sae-dashboard",
        action="store_true",
        help=f"time sae-dashboard on every latent, not on {SAE_DASHBOARD_FEATURE_BATCH} "
        "random ones scaled up (gpt2: ~23 min on 2 cores and more than 24 GB)",
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = QUICK_ROWS if args.quick else ROWS
    repeats = 2 if args.quick else 5
    names = [args.only] if args.only else list(WORKLOADS)
    started = last = time.perf_counter()

    def lap(section: str) -> None:  # where the benchmark's own time goes
        nonlocal last
        now = time.perf_counter()
        print(f"({section}: {now - last:.0f} s)\n", flush=True)
        last = now

    results = []
    for name in names:
        print(f"measuring {name} ...", flush=True)
        results.append(measure(name, rows[name], repeats))
    print()
    print_engine(results)
    lap("engine")
    attribution = [measure_attribution(name, repeats) for name in names]
    print_attribution(attribution)
    lap("attribution")
    training = [measure_training_step(name, repeats) for name in names]
    print_training(training)
    lap("training step")
    scale = [] if args.skip_scale else [measure_scale(n, rows[n], 2) for n in names]
    if scale:
        print_scale(scale)
        lap("scale curve")
    dashboard = []
    if not args.skip_sae_dashboard:
        try:
            sample = None if args.full_sae_dashboard else SAE_DASHBOARD_FEATURE_BATCH
            dashboard = [
                measure_sae_dashboard(name, rows[name], min(repeats, 2), args.max_latents, sample)
                for name in names
            ]
        except SideVenvError as exc:
            sys.exit(
                f"dashboards_vs_sae_dashboard=not measured: {exc}\n(pass --skip-sae-dashboard "
                "to run the other benchmarks without it)"
            )
        print_dashboards(dashboard)
        lap("dashboards vs sae-dashboard")

    lines = []
    for group in (results, attribution, training, scale, dashboard):
        for r in group:
            lines += [verdict(f"{key}", r[key]) + f"  [{r['model']}]"
                      for key in TARGETS if key in r]  # fmt: skip
    for line in lines:
        print(line)
    if args.skip_sae_dashboard:
        print("dashboards_vs_sae_dashboard=not measured (skipped with --skip-sae-dashboard)")
    print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
