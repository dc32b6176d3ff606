"""Finding the latents that matter for a behaviour: direct logit attribution, ablation, and
attribution patching.

All three score SAE latents by their effect on a task's logit difference (see
:mod:`saebook.tasks`). Ablation is exact but costs one forward pass per latent; attribution
patching estimates every latent's ablation effect from one forward and one backward pass
(activation x gradient); direct logit attribution keeps only the path from the latent's
decoder direction straight to the unembedding. :func:`integrated_attribution` averages the
gradient along the path from the clean activations to zero (integrated gradients), which
follows a non-linear effect better at the cost of a few more backward passes.

Chapters: intro/04
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.directions import check_latents, decoder_directions, effective_unembedding
from saebook.hooks import check_sae_hooks, sae_hooks
from saebook.tasks import LogitDiffTask
from saebook.validate import check_int

__all__ = [
    "latent_activations_at_last",
    "direct_logit_attribution",
    "ablation_effects",
    "attribution_patching",
    "integrated_attribution",
]


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
    unedited run is the clean model). Prompts do not interact in a forward pass, so one
    backward pass of the *sum* of the per-prompt logit differences gives every prompt's own
    gradient, at the scale of one prompt (back-propagating the mean would divide every entry
    by the batch size).

    The mean over prompts of ``[:, -1, i]`` estimates :func:`ablation_effects`' effect of
    latent ``i`` (the mean over prompts of the exact per-prompt change); summing over
    positions estimates a whole-sequence ablation.
    """
    name, _ = _with_latent_edit(sae, lambda a: a)
    stash: dict[str, Tensor] = {}

    def keep(acts, hook):
        acts.retain_grad()
        stash["acts"] = acts
        return acts

    with torch.enable_grad(), model.saes(saes=[sae], use_error_term=True):
        logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, keep)])
        # sum, not mean: d(sum_b LD_b)/d a[b] = d LD_b / d a[b], one prompt's own gradient
        task.logit_diff(logits).sum().backward()
    acts = stash["acts"]
    model.zero_grad(set_to_none=True)
    sae.zero_grad(set_to_none=True)
    return (-acts * acts.grad).detach()


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
