"""Finding the latents that matter for a behaviour: direct logit attribution, ablation, and
attribution patching.

All three score SAE latents by their effect on a task's logit difference (see
:mod:`saebook.tasks`). Ablation is exact but costs one forward pass per latent; attribution
patching estimates every latent's ablation effect from one forward and one backward pass
(activation x gradient); direct logit attribution keeps only the path from the latent's
decoder direction straight to the unembedding. :func:`integrated_attribution` averages the
gradient along the path from the clean activations to zero (integrated gradients), which
follows a non-linear effect better at the cost of a few more backward passes.

:func:`spliced_logits` and :func:`node_gradients` splice several SAEs into one forward pass,
each with its reconstruction error kept as a node, and give the metric's gradient with
respect to every latent and every error; :func:`attribution_patching` is their one-SAE case,
and :mod:`saebook.feature_circuits` builds sparse feature circuits on them.

Chapters: intro/04, circuits/04
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import check_latents, decoder_directions, effective_unembedding
from saebook.hooks import check_sae_hooks, flatten_heads, sae_hooks
from saebook.tasks import LogitDiffTask
from saebook.validate import check_int

__all__ = [
    "latent_activations_at_last",
    "direct_logit_attribution",
    "ablation_effects",
    "attribution_patching",
    "integrated_attribution",
    "SiteNodes",
    "splice_site",
    "spliced_logits",
    "node_gradients",
]

#: ``edit(site, latents, error) -> (latents, error)``: changes one site's nodes in a splice.
SiteEdit = Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]


class SiteNodes(NamedTuple):
    """One SAE site's nodes in a spliced run: latents ``(batch, seq, d_sae)`` and the
    reconstruction error ``(batch, seq, d_in)``, with the metric's gradients (None when no
    gradient was taken)."""

    acts: Tensor
    error: Tensor
    acts_grad: Tensor | None = None
    error_grad: Tensor | None = None


def splice_site(
    sae: SAE, x: Tensor
) -> tuple[Float[Tensor, "batch seq d_sae"], Float[Tensor, "batch seq d_in"], Tensor]:
    """``(latents, error, output)`` of an SAE spliced in at an activation ``x`` (batch, seq, ...).

    ``latents = encode(x)``, ``error = x - decode(latents)`` (flattened to ``(batch, seq,
    d_in)``) and ``output = decode(latents) + error`` shaped like ``x``, equal to ``x``. The
    returned latents are a fresh tensor used only by the decoder in ``output``, so the gradient
    of the output with respect to them is the decoder's (the copy subtracted inside the error
    would cancel it); the gradient with respect to ``x`` is the identity, through the error.
    """
    flat = flatten_heads(sae, x)
    rows = x.shape[:2]
    acts = sae.encode(flat)
    error = flat.reshape(*rows, -1) - sae.decode(acts).reshape(*rows, -1)
    acts = acts.clone()
    return acts, error, (sae.decode(acts).reshape(*rows, -1) + error).reshape(x.shape)


def _splice_hook(sae: SAE, site: int, edit: SiteEdit | None, out: list):
    """The forward hook replacing an activation ``x`` by ``decode(latents) + error``."""

    def hook(x: Tensor, hook) -> Tensor:
        acts, error, output = splice_site(sae, x)
        if edit is None:
            out[site] = (acts, error)
            return output
        acts, error = edit(site, acts, error)
        out[site] = (acts, error)
        rows = x.shape[:2]
        return (sae.decode(acts).reshape(*rows, -1) + error).reshape(x.shape)

    return hook


def spliced_logits(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    tokens: Int[Tensor, "batch seq"],
    edit: SiteEdit | None = None,
    nodes: list | None = None,
) -> Float[Tensor, "batch seq d_vocab"]:
    """Logits with every SAE of ``saes`` spliced in at its hook, its error kept as a node.

    At each SAE's hook the activation ``x`` becomes ``decode(a) + e`` with ``a = encode(x)``
    and ``e = x - decode(a)``, so an unedited run reproduces the model exactly, and ``e``
    depends on ``x`` with its gradient (unlike SAELens' ``use_error_term``, whose error is
    computed without gradient): a change upstream reaches later sites through both their
    latents and their errors. ``edit(site, a, e)`` may replace a site's nodes (site = index
    in ``saes``); ``nodes``, a list of ``len(saes)`` entries, receives each site's
    ``(a, e)`` as used. Each SAE must read and write one hook (a transcoder, which writes
    another hook, is refused), and no two SAEs may share a hook.
    """
    if not saes:
        raise ValueError("saes must hold at least one SAE, got none")
    hooks = []
    out = nodes if nodes is not None else [None] * len(saes)
    if len(out) != len(saes):
        raise ValueError(f"nodes must have {len(saes)} entries, got {len(out)}")
    for site, sae in enumerate(saes):
        hook_in, hook_out = check_sae_hooks(model, sae)
        if hook_in != hook_out:
            raise ValueError(
                f"saes[{site}] must read and write the same hook, got {hook_in!r} -> "
                f"{hook_out!r} (a transcoder replaces a computation; splice SAEs only)"
            )
        if hook_in in [h for h, _ in hooks]:
            raise ValueError(f"saes[{site}] shares hook {hook_in!r} with an earlier SAE")
        hooks.append((hook_in, _splice_hook(sae, site, edit, out)))
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def node_gradients(
    model: HookedSAETransformer,
    saes: Sequence[SAE],
    tokens: Int[Tensor, "batch seq"],
    metric: Callable[[Tensor], Tensor],
    edit: SiteEdit | None = None,
) -> list[SiteNodes]:
    """Every site's latents and error, and the gradient of ``metric(logits)`` (a scalar) with
    respect to each, in one forward and one backward pass of :func:`spliced_logits`.

    A node's gradient counts the paths from that node forward (later sites recompute their
    latents and errors), which is what patching the node alone changes. For per-prompt
    gradients let ``metric`` sum a per-prompt quantity over the batch. Nodes that ``edit``
    replaces by tensors without a graph become leaves whose gradient is still returned.
    """

    def keep(site: int, acts: Tensor, error: Tensor) -> tuple[Tensor, Tensor]:
        if edit is not None:
            acts, error = edit(site, acts, error)
        for t in (acts, error):
            if t.requires_grad:
                t.retain_grad()
            else:
                t.requires_grad_(True)
        return acts, error

    nodes: list = [None] * len(saes)
    with torch.enable_grad():
        value = metric(spliced_logits(model, saes, tokens, keep, nodes))
        if value.ndim != 0:
            raise ValueError(f"metric must return a scalar, got shape {tuple(value.shape)}")
        value.backward()
    model.zero_grad(set_to_none=True)
    result = []
    for sae, (acts, error) in zip(saes, nodes, strict=True):
        sae.zero_grad(set_to_none=True)
        result.append(SiteNodes(acts.detach(), error.detach(), _grad(acts), _grad(error)))
    return result


def _grad(t: Tensor) -> Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad.detach()


@torch.no_grad()
def latent_activations_at_last(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"]
) -> Float[Tensor, "batch d_sae"]:
    """The SAE's latent activations at the last position of every row."""
    hook_in, _ = check_sae_hooks(model, sae)
    _, cache = model.run_with_cache(tokens, names_filter=hook_in)
    return sae.encode(cache[hook_in][:, -1])


@torch.no_grad()
def direct_logit_attribution(
    model: HookedSAETransformer, sae: SAE, task: LogitDiffTask
) -> Float[Tensor, "batch d_sae"]:
    """Each latent's direct contribution to the clean logit difference at the last position.

    ``activation * (direction . (U[:, answer] - U[:, wrong])) / ln_final_scale`` with ``U``
    the effective unembedding (:func:`saebook.directions.effective_unembedding`: ``W_U``
    behind the final LayerNorm's centring and weight): the effect of the latent's decoder
    direction if it went straight to the unembedding, with the final LayerNorm frozen at its
    clean scale. This is TransformerLens' ``cache.logit_attrs`` on the latent's contribution
    to the residual stream. Later layers' use of the latent is not counted: compare with
    :func:`ablation_effects` for the total effect.
    """
    hook_in, _ = check_sae_hooks(model, sae)
    names = (hook_in, "ln_final.hook_scale")
    _, cache = model.run_with_cache(task.clean, names_filter=lambda n: n in names)
    acts = sae.encode(cache[hook_in][:, -1])  # (batch, d_sae)
    scale = cache["ln_final.hook_scale"][:, -1]  # (batch, 1)
    w_u = effective_unembedding(model)
    diff_dirs = w_u[:, task.answer] - w_u[:, task.wrong]  # (d_model, batch)
    per_latent = decoder_directions(model, sae) @ diff_dirs  # (d_sae, batch)
    return acts * per_latent.T / scale


def _with_latent_edit(sae: SAE, edit):
    """A forward hook on the SAE's latents applying ``edit(acts) -> acts``."""
    name = f"{sae_hooks(sae)[1]}.hook_sae_acts_post"
    return name, lambda acts, hook: edit(acts)


@torch.no_grad()
def ablation_effects(
    model: HookedSAETransformer,
    sae: SAE,
    task: LogitDiffTask,
    latents: Int[Tensor, " n"] | None = None,
    chunk: int = 32,
) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"]]:
    """Exact change of the mean clean logit difference when a latent is zeroed at the last token.

    The SAE is spliced in with its error term, so the unedited run reproduces the clean model
    and an edit changes the output only through the ablated latent. ``latents`` defaults to
    every latent active at the last position of some prompt (the others have effect 0).
    Returns ``(latents, effects)``; an effect is ``ablated - clean`` (negative: the latent
    supported the answer). Cost: one batched forward pass per ``chunk`` latents.
    """
    if latents is None:
        latents = torch.nonzero(
            latent_activations_at_last(model, sae, task.clean).amax(0) > 0
        ).flatten()
    check_int("chunk", chunk)
    latents = check_latents(sae, latents, allow_empty=True)
    batch = task.clean.shape[0]
    with model.saes(saes=[sae], use_error_term=True):
        base = task.logit_diff(model(task.clean)).mean()
        effects = []
        for group in latents.split(chunk):
            reps = group.numel()
            tokens = task.clean.repeat(reps, 1)
            which = group.repeat_interleave(batch)

            def zero_one(acts, which=which):
                acts = acts.clone()
                acts[torch.arange(acts.shape[0]), -1, which] = 0.0
                return acts

            name, fn = _with_latent_edit(sae, zero_one)
            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])
            diffs = task.logit_diff(logits, repeat=reps).view(reps, batch).mean(1)
            effects.append(diffs - base)
    return latents, torch.cat(effects) if effects else torch.zeros(0)


def attribution_patching(
    model: HookedSAETransformer, sae: SAE, task: LogitDiffTask
) -> Float[Tensor, "batch seq d_sae"]:
    """Linear estimate of zero-ablating each latent at each position of each prompt.

    Entry ``[b, p, i]`` is ``-a[b, p, i] * d LD_b / d a[b, p, i]``: the first-order change of
    prompt ``b``'s own clean logit difference ``LD_b`` when latent ``i`` is set to zero at
    position ``p`` of that prompt only, with the SAE spliced in with its error term (so the
    unedited run is the clean model; :func:`node_gradients` with one SAE). Prompts do not
    interact in a forward pass, so one backward pass of the *sum* of the per-prompt logit
    differences gives every prompt's own gradient, at the scale of one prompt
    (back-propagating the mean would divide every entry by the batch size).

    The mean over prompts of ``[:, -1, i]`` estimates :func:`ablation_effects`' effect of
    latent ``i`` (the mean over prompts of the exact per-prompt change); summing over
    positions estimates a whole-sequence ablation.
    """
    (site,) = node_gradients(model, [sae], task.clean, lambda logits: task.logit_diff(logits).sum())
    return -site.acts * site.acts_grad


def integrated_attribution(
    model: HookedSAETransformer, sae: SAE, task: LogitDiffTask, steps: int = 10
) -> Float[Tensor, "batch d_sae"]:
    """Integrated-gradients estimate of zeroing each latent at the last position of each prompt.

    Entry ``[b, i]`` is ``-a[b, i] * mean_k d LD_b / d a[b, i]`` with the gradient taken where
    every latent at prompt ``b``'s last position is scaled by ``alpha_k = (k + 1/2) / steps``
    (midpoint rule on the straight path from the clean activations to zero), the SAE spliced
    in with its error term. Same scale as :func:`attribution_patching` (one prompt's own
    logit difference), which is the single-point estimate at ``alpha = 1``; costs ``steps``
    forward and backward passes. Over all latents the entries of a prompt add up (up to the
    quadrature error) to the effect of zeroing every latent at its last position at once.
    """
    check_int("steps", steps)
    name, _ = _with_latent_edit(sae, lambda a: a)
    total: Tensor | None = None
    clean: Tensor | None = None
    for k in range(steps):
        alpha = (k + 0.5) / steps
        stash: dict[str, Tensor] = {}

        def scale_last(acts, hook, alpha=alpha, stash=stash):
            scaled = acts.detach().clone()
            scaled[:, -1] = scaled[:, -1] * alpha
            scaled.requires_grad_(True)
            stash["clean"], stash["scaled"] = acts.detach()[:, -1], scaled
            return scaled

        with torch.enable_grad(), model.saes(saes=[sae], use_error_term=True):
            logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, scale_last)])
            task.logit_diff(logits).sum().backward()
        grad = stash["scaled"].grad[:, -1]
        total = grad if total is None else total + grad
        clean = stash["clean"]
    model.zero_grad(set_to_none=True)
    sae.zero_grad(set_to_none=True)
    return (-clean * total / steps).detach()
