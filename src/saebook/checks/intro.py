"""Checkers for the exercises of part 2, "Intro to SAE interpretability"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from saebook.checks.core import Case, _generator, check_function

# --- Part 1, chapter 3: latent dashboards ---------------------------------------------------


def check_top_logits(fn: Callable[..., tuple[Tensor, Tensor]], model: Any, sae: Any) -> None:
    """Check ``fn(model, sae, latent, k) -> (values, token_ids)`` for a residual-stream SAE.

    The reference is :func:`saebook.dashboards.top_logits`: the ``k`` largest entries of the
    direct logit effect of ``W_dec[latent]`` through the final LayerNorm's centring and
    weight and ``W_U`` (:func:`saebook.directions.logit_effects`), largest first, and their
    token ids. Cases:
    the first, a middle and the last latent, the latent with the largest decoder norm, and
    ``k`` from 1 to 20.
    """
    from saebook import dashboards

    def reference(model: Any, sae: Any, latent: int, k: int) -> tuple[Tensor, Tensor]:
        return dashboards.top_logits(model, sae, latent, k)

    d_sae = sae.cfg.d_sae
    k_max = min(20, model.cfg.d_vocab)
    strongest = int(sae.W_dec.norm(dim=-1).argmax())
    cases: list[Case] = [
        ("latent 0, k=5", (model, sae, 0, 5), {}),
        ("a middle latent, k=1", (model, sae, d_sae // 2, 1), {}),
        (f"a middle latent, k={k_max}", (model, sae, d_sae // 2, k_max), {}),
        (f"the last latent ({d_sae - 1}), k=5", (model, sae, d_sae - 1, 5), {}),
        (f"the largest-norm latent ({strongest}), k=10", (model, sae, strongest, 10), {}),
    ]
    check_function(fn, reference, cases, atol=1e-4, rtol=1e-4)


# --- Part 1, chapters 5-7: attention SAEs, steering, architectures ---------------------------


def reference_head_norms(W_dec: Tensor, n_heads: int) -> Tensor:
    """``(d_sae, n_heads * d_head) -> (d_sae, n_heads)``: the L2 norm of each head's block."""
    return W_dec.reshape(W_dec.shape[0], n_heads, -1).norm(dim=-1)


def check_head_norms(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(W_dec, n_heads)``: per-head decoder norms of a ``hook_z`` SAE.

    ``W_dec`` is ``(d_sae, n_heads * d_head)`` flattened head by head; the result is
    ``(d_sae, n_heads)``. Cases include one head, ``d_head = 1``, a zero latent and a latent
    living in a single head (which a transposed reshape gets wrong).
    """
    g = _generator(6)
    W = torch.randn(10, 4 * 3, generator=g)
    one_head = torch.zeros(5, 4 * 3)
    one_head[:, 3:6] = torch.randn(5, 3, generator=g)  # only head 1
    with_zero = W.clone()
    with_zero[2] = 0
    cases: list[Case] = [
        ("random, 4 heads of 3", (W, 4), {}),
        ("latents in head 1 only", (one_head, 4), {}),
        ("one head", (W, 1), {}),
        ("d_head = 1", (W, 12), {}),
        ("a zero latent", (with_zero, 4), {}),
        ("one latent", (W[:1], 2), {}),
    ]
    check_function(fn, reference_head_norms, cases)


def check_head_split(fn: Callable[[Tensor, Tensor, Tensor, int], Tensor]) -> None:
    """Check ``fn(delta_acts, out_grad, W_dec, n_heads) -> (d_sae, n_heads)``.

    The reference is :func:`saebook.attention.split_by_head`: entry ``[i, h]`` is the mean over
    prompts of ``sum_pos delta_acts[., pos, i] * (out_grad[., pos, h block] . W_dec[i, h block])``.
    Cases include one head, a latent in one head only, and several prompts (a sum over prompts
    instead of a mean gets those wrong).
    """
    from saebook.attention import split_by_head

    g = _generator(61)
    delta = torch.randn(3, 5, 7, generator=g)
    grad = torch.randn(3, 5, 4 * 2, generator=g)
    W = torch.randn(7, 4 * 2, generator=g)
    one_head = torch.zeros(7, 8)
    one_head[:, 2:4] = torch.randn(7, 2, generator=g)  # only head 1
    cases: list[Case] = [
        ("3 prompts, 4 heads of 2", (delta, grad, W, 4), {}),
        ("latents in head 1 only", (delta, grad, one_head, 4), {}),
        ("one head", (delta, grad, W, 1), {}),
        ("one prompt", (delta[:1], grad[:1], W, 2), {}),
        ("d_head = 1", (delta, grad, W, 8), {}),
    ]
    check_function(fn, split_by_head, cases)


def reference_steering_hook(direction: Tensor, coefficient: float) -> Callable[..., Tensor]:
    """The reference steering hook: ``activation + coefficient * direction``."""
    from saebook.steering import steering_hook

    return steering_hook(direction, coefficient)


def _steering_probe(make_hook: Callable[..., Any]) -> Callable[..., Tensor]:
    def run(direction: Tensor, coefficient: float, activation: Tensor) -> Tensor:
        return make_hook(direction, coefficient)(activation, None)

    return run


def check_steering_hook(fn: Callable[[Tensor, float], Callable[..., Tensor]]) -> None:
    """Check ``fn(direction, coefficient) -> hook`` with ``hook(activation, hook)`` steering.

    The hook must return ``activation + coefficient * direction`` at every batch row and
    position. Cases: coefficient 0 (no change), negative and large coefficients, one
    position, a zero direction, and a non-unit direction.
    """
    g = _generator(7)
    d = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    acts = torch.randn(3, 5, 8, generator=g)
    cases: list[Case] = [
        ("random, coefficient 2", (d, 2.0, acts), {}),
        ("coefficient 0", (d, 0.0, acts), {}),
        ("negative coefficient", (d, -3.5, acts), {}),
        ("large coefficient", (d, 100.0, acts), {}),
        ("one position", (d, 1.0, acts[:, :1]), {}),
        ("batch of one", (d, 1.5, acts[:1]), {}),
        ("zero direction", (torch.zeros(8), 5.0, acts), {}),
        ("non-unit direction", (d * 3.0, 0.5, acts), {}),
    ]
    check_function(_steering_probe(fn), _steering_probe(reference_steering_hook), cases)


def reference_jumprelu_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, threshold: Tensor, apply_b_dec: bool
) -> Tensor:
    """SAELens' ``JumpReLUSAE.encode`` on ``x`` for the given weights (the reference)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=W_enc.shape[0], d_sae=W_enc.shape[1], apply_b_dec_to_input=apply_b_dec
        )
    )
    sae.load_state_dict(
        {
            "W_enc": W_enc,
            "b_enc": b_enc,
            "W_dec": W_enc.T.contiguous(),
            "b_dec": b_dec,
            "threshold": threshold,
        }
    )
    with torch.no_grad():
        return sae.encode(x)


def check_jumprelu_encode(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, W_enc, b_enc, b_dec, threshold, apply_b_dec) -> (batch, d_sae)``.

    The reference is SAELens' own ``JumpReLUSAE.encode``. Cases: both settings of
    ``apply_b_dec`` (subtract ``b_dec`` from ``x`` first or not), thresholds of zero, negative
    thresholds (ReLU still applies), thresholds so high nothing fires, and pre-activations
    equal to the threshold (which must not fire: the comparison is strict).
    """
    g = _generator(8)
    d_in, d_sae = 5, 12
    W = torch.randn(d_in, d_sae, generator=g)
    b_enc = torch.randn(d_sae, generator=g) * 0.2
    b_dec = torch.randn(d_in, generator=g) * 0.5
    theta = torch.rand(d_sae, generator=g)
    x = torch.randn(16, d_in, generator=g)
    at_threshold = torch.zeros(1, d_in)  # pre = b_enc exactly when apply_b_dec is False
    cases: list[Case] = [
        ("random, b_dec subtracted", (x, W, b_enc, b_dec, theta, True), {}),
        ("random, b_dec not subtracted", (x, W, b_enc, b_dec, theta, False), {}),
        ("zero thresholds (plain ReLU)", (x, W, b_enc, b_dec, torch.zeros(d_sae), True), {}),
        ("negative thresholds", (x, W, b_enc, b_dec, -theta, False), {}),
        ("thresholds too high to fire", (x, W, b_enc, b_dec, theta + 100.0, True), {}),
        (
            "pre-activation equal to the threshold",
            (at_threshold, W, b_enc, b_dec, b_enc, False),
            {},
        ),
        ("batch of one", (x[:1], W, b_enc, b_dec, theta, True), {}),
    ]
    check_function(fn, reference_jumprelu_encode, cases)


# --- Part 1, chapter 3: the dashboard statistics pass ---------------------------------------


def reference_latent_summary(
    model: Any, sae: Any, tokens: Tensor, k: int, batch_size: int
) -> dict[str, Tensor]:
    """:func:`saebook.latent_stats.latent_stats`' count, mean, max and top-k values."""
    from saebook.latent_stats import latent_stats

    stats = latent_stats(model, sae, tokens, batch_size=batch_size, k=k, progress=False)
    return {
        "count": stats.count,
        "mean": stats.mean_activation.float().nan_to_num(0.0),
        "max": stats.max,
        "top_values": stats.top_values,
    }


def check_latent_summary(fn: Callable[..., dict[str, Tensor]], model: Any, sae: Any,
                         tokens: Tensor) -> None:  # fmt: skip
    """Check ``fn(model, sae, tokens, k, batch_size) -> dict`` of per-latent statistics.

    Over every position of ``tokens`` except BOS positions (``model.tokenizer.bos_token_id``),
    for every latent: ``"count"`` (int64, positions where it fires, activation > 0),
    ``"mean"`` (mean activation where it fires, 0 if it never does), ``"max"`` and
    ``"top_values"`` (``(d_sae, k)``, its ``k`` largest activations, largest first, padded
    with 0). The reference is :func:`saebook.latent_stats.latent_stats`. Cases: a few rows
    in one batch, the same rows in batches of one row (a running top-k must merge batches),
    ``k = 1``, and a batch size that does not divide the number of rows.
    """
    rows = min(6, tokens.shape[0])
    seq = min(32, tokens.shape[1])
    sample = tokens[:rows, :seq]
    cases: list[Case] = [
        (f"{rows} rows, one batch, k=5", (model, sae, sample, 5, rows), {}),
        (f"{rows} rows in batches of 1, k=5", (model, sae, sample, 5, 1), {}),
        ("k=1", (model, sae, sample, 1, rows), {}),
        (f"{rows} rows in batches of 4, k=8", (model, sae, sample, 8, 4), {}),
    ]
    check_function(_as_float_dict(fn), _as_float_dict(reference_latent_summary), cases,
                   atol=1e-4, rtol=1e-4)  # fmt: skip


def _as_float_dict(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compare counts exactly but as numbers (an int32 count is as good as an int64 one)."""

    def run(*args: Any) -> Any:
        out = fn(*args)
        if not isinstance(out, dict):
            return out
        return {k: torch.as_tensor(v).detach().cpu().double() for k, v in out.items()}

    return run


# --- Part 1, chapter 4: finding latents that matter ------------------------------------------


def _subtask(task: Any, rows: slice) -> Any:
    from dataclasses import replace

    return replace(task, clean=task.clean[rows], corrupted=task.corrupted[rows],
                   answer=task.answer[rows], wrong=task.wrong[rows],
                   prompts=task.prompts[rows])  # fmt: skip


def reference_logit_diff(logits: Tensor, answer: Tensor, wrong: Tensor) -> Tensor:
    """:meth:`saebook.tasks.LogitDiffTask.logit_diff` for the given answers."""
    from saebook.tasks import LogitDiffTask

    n = answer.shape[0]
    empty = torch.zeros(n, 1, dtype=torch.long)
    return LogitDiffTask("", "", empty, empty, answer, wrong, [""] * n).logit_diff(logits)


def check_logit_diff(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(logits, answer, wrong) -> (batch,)``: answer minus wrong logit, last position.

    ``logits`` is ``(batch, seq, d_vocab)``, ``answer`` and ``wrong`` are ``(batch,)`` token
    ids, one per row. The reference is :meth:`saebook.tasks.LogitDiffTask.logit_diff`. Cases
    include a sequence of length one, answers equal to the wrong tokens (0) and rows with
    different answers (which a ``logits[:, -1, answer]`` slice gets wrong).
    """
    g = _generator(9)
    logits = torch.randn(4, 6, 11, generator=g)
    answer = torch.tensor([1, 5, 5, 0])
    wrong = torch.tensor([2, 3, 7, 10])
    cases: list[Case] = [
        ("random", (logits, answer, wrong), {}),
        ("one position", (logits[:, -1:], answer, wrong), {}),
        ("answer = wrong", (logits, answer, answer), {}),
        ("batch of one", (logits[:1], answer[:1], wrong[:1]), {}),
        ("same answers in every row", (logits, torch.full((4,), 3), torch.full((4,), 8)), {}),
    ]
    check_function(fn, reference_logit_diff, cases)


def reference_ablation_effects(model: Any, sae: Any, task: Any, latents: Tensor) -> Tensor:
    """:func:`saebook.attribution.ablation_effects` for ``latents``."""
    from saebook.attribution import ablation_effects

    return ablation_effects(model, sae, task, latents)[1]


def check_ablation_effects(fn: Callable[..., Tensor], model: Any, sae: Any, task: Any) -> None:
    """Check ``fn(model, sae, task, latents) -> (n,)``: exact effects of zero-ablating latents.

    Entry ``j`` is the mean over the task's prompts of the clean logit difference with latent
    ``latents[j]`` set to 0 at the last position, minus the mean without the edit, with the
    SAE spliced in with its error term. The reference is
    :func:`saebook.attribution.ablation_effects`. Cases: the latents most active at the last
    position, a latent that never fires there (effect 0), and a single prompt.
    """
    from saebook.attribution import latent_activations_at_last

    acts = latent_activations_at_last(model, sae, task.clean).amax(0)
    order = acts.argsort(descending=True).cpu()
    top = order[:3]
    silent = order[-1:]
    cases: list[Case] = [
        ("the 3 most active latents", (model, sae, task, top), {}),
        ("a latent silent at the last position", (model, sae, task, silent), {}),
        ("one prompt, most active latent", (model, sae, _subtask(task, slice(0, 1)), top[:1]), {}),
    ]
    check_function(fn, reference_ablation_effects, cases, atol=1e-4, rtol=1e-3)


def reference_attribution_patching(model: Any, sae: Any, task: Any) -> Tensor:
    """:func:`saebook.attribution.attribution_patching`, one prompt at a time.

    Each prompt's entries are its own ``-a * d LD / d a``; computing them prompt by prompt
    fixes that scale whatever the batch.
    """
    from saebook.attribution import attribution_patching

    rows = task.clean.shape[0]
    return torch.cat([attribution_patching(model, sae, _subtask(task, slice(b, b + 1)))
                      for b in range(rows)])  # fmt: skip


def check_attribution_patching(fn: Callable[..., Tensor], model: Any, sae: Any,
                               task: Any) -> None:  # fmt: skip
    """Check ``fn(model, sae, task) -> (batch, seq, d_sae)`` attribution-patching estimates.

    Entry ``[b, p, i]`` is ``-a[b, p, i] * d LD_b / d a[b, p, i]``: prompt ``b``'s latent
    activation times the gradient of prompt ``b``'s own clean logit difference, with the SAE
    spliced in with its error term. The reference is
    :func:`saebook.attribution.attribution_patching` run on one prompt at a time. Cases: one
    prompt, and several (back-propagating the mean logit difference instead of the sum
    divides every entry by the number of prompts).
    """
    rows = min(4, task.clean.shape[0])
    cases: list[Case] = [
        ("one prompt", (model, sae, _subtask(task, slice(0, 1))), {}),
        (f"{rows} prompts", (model, sae, _subtask(task, slice(0, rows))), {}),
    ]
    check_function(fn, reference_attribution_patching, cases, atol=1e-4, rtol=1e-3)


# --- Part 1, chapter 5: attention SAEs ------------------------------------------------------


def reference_source_contributions(model: Any, sae: Any, tokens: Tensor, latent: int) -> Tensor:
    """:func:`saebook.attention.source_attribution`'s ``contributions``."""
    from saebook.attention import source_attribution

    return source_attribution(model, sae, tokens, latent).contributions


def check_source_contributions(fn: Callable[..., Tensor], model: Any, sae: Any,
                               tokens: Tensor) -> None:  # fmt: skip
    """Check ``fn(model, sae, tokens, latent) -> (batch, n_heads, dst, src)`` for a hook_z SAE.

    Entry ``[b, h, d, s]`` is ``pattern[b, h, d, s] * (v[b, s, h] . W_enc[h-block, latent])``,
    with ``W_enc`` scaled as the SAE scales its pre-activations (by the decoder norm when
    ``rescale_acts_by_decoder_norm`` is set). The reference is
    :func:`saebook.attention.source_attribution`. Cases: the latent with the largest decoder
    norm, the first and last latents, and one sequence.
    """
    strongest = int(sae.W_dec.norm(dim=-1).argmax())
    sample = tokens[:2, : min(24, tokens.shape[1])]
    d_sae = sae.cfg.d_sae
    cases: list[Case] = [
        (f"the largest-norm latent ({strongest})", (model, sae, sample, strongest), {}),
        ("latent 0", (model, sae, sample, 0), {}),
        (f"the last latent ({d_sae - 1})", (model, sae, sample, d_sae - 1), {}),
        ("one sequence", (model, sae, sample[:1], strongest), {}),
    ]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        import copy

        rescaled = copy.deepcopy(sae)
        with torch.no_grad():  # decoder rows of norm 1 to 3: the rescaling matters
            rows = torch.linspace(1.0, 3.0, d_sae, device=sae.W_dec.device)
            rescaled.W_dec.mul_(rows[:, None] / rescaled.W_dec.norm(dim=-1, keepdim=True))
        cases.append(
            (f"decoder rows rescaled, latent {strongest}", (model, rescaled, sample, strongest), {})
        )
    check_function(fn, reference_source_contributions, cases, atol=1e-4, rtol=1e-3)


# --- Part 1, chapter 6: steered generation --------------------------------------------------


def reference_steered_greedy(model: Any, prompts: Tensor, hook_name: str, direction: Tensor,
                             coefficient: float, new_tokens: int) -> Tensor:  # fmt: skip
    """TransformerLens' greedy ``generate`` with :func:`saebook.steering.steering_hook` on."""
    from saebook.steering import steering_hook

    with (
        torch.no_grad(),
        model.hooks(fwd_hooks=[(hook_name, steering_hook(direction, coefficient))]),
    ):
        out = model.generate(prompts, max_new_tokens=new_tokens, do_sample=False,
                             stop_at_eos=False, prepend_bos=False, verbose=False,
                             use_past_kv_cache=False)  # fmt: skip
    return out.clone()


def check_steered_greedy(fn: Callable[..., Tensor], model: Any, sae: Any, prompts: Tensor,
                         latent: int, max_act: float) -> None:  # fmt: skip
    """Check ``fn(model, prompts, hook_name, direction, coefficient, new_tokens)``.

    The result is ``(batch, pos + new_tokens)``: the prompts followed by greedy continuations
    (the most likely token at each step) with ``coefficient * direction`` added at
    ``hook_name`` at every position of every forward pass. The reference is TransformerLens'
    ``generate(do_sample=False)`` with :func:`saebook.steering.steering_hook` on. Cases use
    ``latent``'s residual-stream direction at multiples of ``max_act`` (its largest
    activation): no steering, both signs, one new token, one prompt.
    """
    from saebook.directions import decoder_directions
    from saebook.steering import steering_hook_name

    hook = steering_hook_name(sae)
    direction = decoder_directions(model, sae, [latent])[0]
    sample = prompts[:2]
    cases: list[Case] = [
        ("coefficient 0 (no steering)", (model, sample, hook, direction, 0.0, 4), {}),
        ("coefficient 4 x max_act", (model, sample, hook, direction, 4.0 * max_act, 4), {}),
        ("coefficient -4 x max_act", (model, sample, hook, direction, -4.0 * max_act, 4), {}),
        ("one new token", (model, sample, hook, direction, 4.0 * max_act, 1), {}),
        ("one prompt", (model, sample[:1], hook, direction, 8.0 * max_act, 4), {}),
    ]
    check_function(fn, reference_steered_greedy, cases)


def reference_direct_logit_attribution(model: Any, sae: Any, task: Any) -> Tensor:
    """:func:`saebook.attribution.direct_logit_attribution` (final LayerNorm folded in)."""
    from saebook.attribution import direct_logit_attribution

    return direct_logit_attribution(model, sae, task)


def check_direct_logit_attribution(
    fn: Callable[..., Tensor], model: Any, sae: Any, task: Any
) -> None:
    """Check ``fn(model, sae, task) -> (batch, d_sae)`` direct logit attribution.

    Entry ``[b, i]`` is latent ``i``'s activation at prompt ``b``'s last position times its
    decoder direction's effect on ``b``'s logit difference through the final LayerNorm (its
    centring and weight, scale frozen at the clean value) and ``W_U``. The reference is
    :func:`saebook.attribution.direct_logit_attribution` (see
    :func:`saebook.directions.effective_unembedding`). Cases: all prompts and one prompt.
    """
    cases: list[Case] = [
        (f"{task.clean.shape[0]} prompts", (model, sae, task), {}),
        ("one prompt", (model, sae, _subtask(task, slice(0, 1))), {}),
    ]
    check_function(fn, reference_direct_logit_attribution, cases, atol=1e-4, rtol=1e-3)


# --- Part 1, chapter 1: running SAEs --------------------------------------------------------


def check_kl_divergence(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(clean_logits, new_logits) -> (...)``: ``KL(p_clean || p_new)`` per position.

    Both inputs are ``(..., d_vocab)`` logits (not normalised); the result is in nats, one
    value per position. The reference is :func:`saebook.metrics.kl_divergence`. Cases include
    equal logits (0), logits shifted by a constant (0: softmax ignores it), the reversed
    order (KL is not symmetric) and a near one-hot distribution.
    """
    from saebook.metrics import kl_divergence

    g = _generator(12)
    clean = torch.randn(2, 5, 7, generator=g)
    new = torch.randn(2, 5, 7, generator=g)
    peaked = clean.clone()
    peaked[..., 0] += 30.0
    cases: list[Case] = [
        ("random", (clean, new), {}),
        ("equal logits", (clean, clean), {}),
        ("shifted by a constant", (clean, clean + 3.0), {}),
        ("reversed", (new, clean), {}),
        ("near one-hot clean", (peaked, new), {}),
        ("one position", (clean[0, 0], new[0, 0]), {}),
    ]
    check_function(fn, kl_divergence, cases, atol=1e-5, rtol=1e-4)


def check_explained_variance(fn: Callable[[Tensor, Tensor], float]) -> None:
    """Check ``fn(x, x_hat) -> float``: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    The mean is the mean row of ``x``; sums run over all rows and dimensions. The reference
    is :func:`saebook.metrics.explained_variance`. Cases include a perfect reconstruction (1),
    the mean row (0), zero (negative when the mean is far from 0) and inputs with a large
    offset (which dividing by ``sum ||x||^2`` gets wrong).
    """
    from saebook.metrics import explained_variance

    g = _generator(13)
    x = torch.randn(32, 6, generator=g)
    noisy = x + 0.3 * torch.randn(32, 6, generator=g)
    cases: list[Case] = [
        ("a noisy reconstruction", (x, noisy), {}),
        ("perfect", (x, x.clone()), {}),
        ("the mean row", (x, x.mean(0).expand_as(x).clone()), {}),
        ("offset inputs", (x + 10.0, noisy + 10.0), {}),
        ("zero reconstruction of offset inputs", (x + 2.0, torch.zeros_like(x)), {}),
    ]
    check_function(fn, explained_variance, cases, atol=1e-5, rtol=1e-4)


# --- Part 1, chapter 6: the fluency cost ----------------------------------------------------


def check_generated_loss(fn: Callable[..., float], model: Any, tokens: Tensor) -> None:
    """Check ``fn(model, tokens, start) -> float``: the model's mean next-token loss (nats)
    on ``tokens[:, start:]``, each token predicted from everything before it.

    The reference is :func:`saebook.steering.generated_loss`. Cases: ``start`` 1 (every
    token but the first), the middle, the last token only, and one row.
    """
    from saebook.steering import generated_loss

    sample = tokens[:2, : min(16, tokens.shape[1])]
    seq = sample.shape[1]
    cases: list[Case] = [
        ("start 1", (model, sample, 1), {}),
        (f"start {seq // 2}", (model, sample, seq // 2), {}),
        ("the last token only", (model, sample, seq - 1), {}),
        ("one row", (model, sample[:1], seq // 2), {}),
    ]
    check_function(fn, generated_loss, cases, atol=1e-4, rtol=1e-4)


# --- Part 1, chapter 7: architectures -------------------------------------------------------


def reference_topk_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int, rescale: bool
) -> Tensor:
    """SAELens' ``TopKSAE.encode`` on ``x`` for the given weights (the reference)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(
        TopKSAEConfig(
            d_in=W_enc.shape[0], d_sae=W_enc.shape[1], k=k, rescale_acts_by_decoder_norm=rescale
        )  # fmt: skip
    )
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    with torch.no_grad():
        return sae.encode(x)


def check_topk_encode(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, W_enc, b_enc, W_dec, b_dec, k, rescale) -> (batch, d_sae)``.

    TopK's ``encode``: subtract ``b_dec``, apply the encoder, multiply the pre-activations by
    the decoder rows' norms when ``rescale`` is true (``rescale_acts_by_decoder_norm``), keep
    the ``k`` largest per row and ReLU them. The reference is SAELens' own ``TopKSAE.encode``.
    Cases: with and without rescaling (decoder rows of different norms), ``k = 1``,
    ``k = d_sae``, and inputs whose pre-activations are all negative.
    """
    g = _generator(14)
    d_in, d_sae = 5, 12
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_in, generator=g) * torch.linspace(0.5, 3.0, d_sae)[:, None]
    b_enc = torch.randn(d_sae, generator=g) * 0.2
    b_dec = torch.randn(d_in, generator=g) * 0.5
    x = torch.randn(16, d_in, generator=g)
    params = (W_enc, b_enc, W_dec, b_dec)
    low = (W_enc, torch.full((d_sae,), -100.0), W_dec, b_dec)
    cases: list[Case] = [
        ("k=3, no rescaling", (x, *params, 3, False), {}),
        ("k=3, rescaled by decoder norms", (x, *params, 3, True), {}),
        ("k=1", (x, *params, 1, True), {}),
        ("k = d_sae", (x, *params, d_sae, False), {}),
        ("all pre-activations negative", (x, *low, 4, False), {}),
        ("batch of one", (x[:1], *params, 2, True), {}),
    ]
    check_function(fn, reference_topk_encode, cases)


def check_firing_agreement(fn: Callable[[Tensor, Tensor], dict[str, float]]) -> None:
    """Check ``fn(acts_a, acts_b) -> {"recall", "precision", "value_corr"}``.

    ``recall``: the share of ``a``'s firings (activation > 0) where ``b`` fires too;
    ``precision``: the share of ``b``'s firings where ``a`` fires; ``value_corr``: Pearson
    correlation of the two activations over the entries where either fires. The reference
    is :func:`saebook.architectures.firing_agreement`. Cases include identical activations,
    ``b`` a scaled copy of ``a`` (correlation 1), ``b`` firing on a superset of ``a``, and a
    3-D input.
    """
    from saebook.architectures import firing_agreement

    g = _generator(15)
    a = torch.relu(torch.randn(40, 10, generator=g) - 0.8)
    b = torch.relu(a + 0.3 * torch.randn(40, 10, generator=g) - 0.1)
    superset = torch.where(a > 0, a, torch.relu(torch.randn(40, 10, generator=g) - 1.0))
    cases: list[Case] = [
        ("noisy copy", (a, b), {}),
        ("identical", (a, a.clone()), {}),
        ("scaled copy", (a, 2.5 * a), {}),
        ("b fires on a superset of a", (a, superset), {}),
        ("reversed roles", (b, a), {}),
        ("3-D input", (a.view(4, 10, 10), b.view(4, 10, 10)), {}),
    ]
    check_function(fn, firing_agreement, cases, atol=1e-5, rtol=1e-4)


def reference_spliced_loss(model: Any, sae: Any, tokens: Tensor) -> Tensor:
    """SAELens' ``run_with_saes(tokens, saes=[sae], return_type="loss")``."""
    with torch.no_grad():
        return model.run_with_saes(tokens, saes=[sae], return_type="loss")


def check_spliced_loss(fn: Callable[..., Any], model: Any, sae: Any, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> scalar``: the mean next-token loss with the SAE's
    reconstruction replacing the activation at its hook (no error term).

    The reference is SAELens' ``HookedSAETransformer.run_with_saes(..., return_type="loss")``.
    Cases: a few rows, one row and a short prefix.
    """
    sample = tokens[:2, : min(24, tokens.shape[1])]
    cases: list[Case] = [
        ("2 rows", (model, sae, sample), {}),
        ("one row", (model, sae, sample[:1]), {}),
        ("a 4-token prefix", (model, sae, sample[:, :4]), {}),
    ]
    check_function(fn, reference_spliced_loss, cases, atol=1e-4, rtol=1e-4)


def reference_bottom_logits(model: Any, sae: Any, latent: int, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest of :func:`saebook.dashboards.latent_logits`, smallest first."""
    from saebook.dashboards import latent_logits

    found = latent_logits(model, sae, latent).topk(k, largest=False)
    return found.values, found.indices


def check_bottom_logits(fn: Callable[..., tuple[Tensor, Tensor]], model: Any, sae: Any) -> None:
    """Check ``fn(model, sae, latent, k) -> (values, token_ids)``: the tokens a latent
    suppresses most, most negative first.

    The reference takes the ``k`` smallest entries of :func:`saebook.dashboards.latent_logits`
    (the direct logit effect through the final LayerNorm's centring and weight). Cases: the
    first and last latents, the latent with the largest decoder norm, ``k`` from 1 to 20.
    """
    d_sae = sae.cfg.d_sae
    k_max = min(20, model.cfg.d_vocab)
    strongest = int(sae.W_dec.norm(dim=-1).argmax())
    cases: list[Case] = [
        ("latent 0, k=5", (model, sae, 0, 5), {}),
        (f"the last latent ({d_sae - 1}), k=1", (model, sae, d_sae - 1, 1), {}),
        (f"the largest-norm latent ({strongest}), k={k_max}", (model, sae, strongest, k_max), {}),
    ]
    check_function(fn, reference_bottom_logits, cases, atol=1e-4, rtol=1e-4)


def reference_repeat_gain(model: Any, sae: Any, tokens: Tensor) -> Tensor:
    """The ``repeat_gain`` column of :func:`saebook.attention.repeated_token_scores`."""
    from saebook.attention import repeated_token_scores

    table = repeated_token_scores(model, sae, tokens, progress=False)
    return torch.tensor(table["repeat_gain"].to_numpy(), dtype=torch.float32)


def check_repeat_gain(fn: Callable[..., Tensor], model: Any, sae: Any, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> (d_sae,)`` on repeated tokens ``BOS, x, x``.

    ``tokens`` is ``(batch, 1 + 2 * half)``; for every latent of the ``hook_z`` SAE, its mean
    activation over the second copy's positions minus its mean over the first copy's (BOS
    left out of both). The reference is the ``repeat_gain`` column of
    :func:`saebook.attention.repeated_token_scores`. Cases: a few sequences and one.
    """
    sample = tokens[:4]
    cases: list[Case] = [
        (f"{sample.shape[0]} sequences", (model, sae, sample), {}),
        ("one sequence", (model, sae, sample[:1]), {}),
    ]
    check_function(fn, reference_repeat_gain, cases, atol=1e-4, rtol=1e-3)


# --- Part 1, chapter 2: checking a loaded SAE -----------------------------------------------


def relu_twin(sae: Any) -> Any:
    """A ReLU (``StandardSAE``) SAE with ``sae``'s weights, hook and metadata.

    A TopK SAE fires exactly k latents at every position, BOS included, so a metric that
    forgets to leave BOS out gives the same L0 on it; with the same weights behind a ReLU the
    number of active latents varies from position to position (and is large at BOS, whose
    activation has a large norm), so the checkers' cases catch that mistake on every profile.
    """
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        dtype=sae.cfg.dtype,
        device=str(sae.W_enc.device),
        apply_b_dec_to_input=sae.cfg.apply_b_dec_to_input,
        normalize_activations=sae.cfg.normalize_activations,
        reshape_activations=sae.cfg.reshape_activations,
        metadata=sae.cfg.metadata,
    )
    twin = StandardSAE(cfg)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(twin, name).copy_(getattr(sae, name))
    return twin.eval()


def _metrics_cases(model: Any, sae: Any, tokens: Tensor) -> list[Case]:
    sample = tokens[:4, : min(32, tokens.shape[1])]
    packed = sample[:2].clone()
    packed[:, ::4] = model.tokenizer.bos_token_id  # documents packed into rows: BOS inside
    return [
        (f"{sample.shape[0]} rows", (model, sae, sample), {}),
        ("one row", (model, sae, sample[:1]), {}),
        ("an 8-token prefix", (model, sae, sample[:, :8]), {}),
        ("BOS tokens inside the rows", (model, sae, packed), {}),
        ("a ReLU SAE with the same weights (L0 varies by position), BOS inside the rows",
         (model, relu_twin(sae), packed[:, :16]), {}),
    ]  # fmt: skip


def reference_l0(model: Any, sae: Any, tokens: Tensor) -> float:
    """``reconstruction_metrics(model, sae, tokens).l0``."""
    from saebook.metrics import reconstruction_metrics

    with torch.no_grad():
        return reconstruction_metrics(model, sae, tokens).l0


def check_l0(fn: Callable[..., float], model: Any, sae: Any, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> float``: latents active per token, BOS left out.

    The mean over non-BOS positions of the number of latents with activation > 0. The
    reference is :func:`saebook.metrics.reconstruction_metrics` (its ``l0``). Cases: a few
    rows, one row, a short prefix (where BOS is a large share of the positions), rows with
    BOS tokens inside them, and a ReLU SAE with the same weights (:func:`relu_twin`: a TopK
    SAE's L0 is k at every position, BOS included, so it cannot tell BOS mistakes apart).
    """
    check_function(fn, reference_l0, _metrics_cases(model, sae, tokens), atol=1e-4, rtol=1e-4)


def reference_dead_fraction(model: Any, sae: Any, tokens: Tensor) -> float:
    """``reconstruction_metrics(model, sae, tokens).dead_fraction``."""
    from saebook.metrics import reconstruction_metrics

    with torch.no_grad():
        return reconstruction_metrics(model, sae, tokens).dead_fraction


def check_dead_fraction(fn: Callable[..., float], model: Any, sae: Any, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> float``: the share of latents that never fire.

    Over the non-BOS positions of ``tokens``. The reference is
    :func:`saebook.metrics.reconstruction_metrics` (its ``dead_fraction``). Cases: a few
    rows, one row and a short prefix (on few tokens most latents look dead).
    """
    cases = _metrics_cases(model, sae, tokens)
    check_function(fn, reference_dead_fraction, cases, atol=1e-6, rtol=1e-6)


def reference_ce_with_sae(model: Any, sae: Any, tokens: Tensor) -> float:
    """``reconstruction_metrics(model, sae, tokens).ce_with_sae``."""
    from saebook.metrics import reconstruction_metrics

    with torch.no_grad():
        return reconstruction_metrics(model, sae, tokens).ce_with_sae


def check_ce_with_sae(fn: Callable[..., float], model: Any, sae: Any, tokens: Tensor) -> None:
    """Check ``fn(model, sae, tokens) -> float``: mean next-token loss with the SAE spliced in
    everywhere except at BOS positions, where the clean activation is kept.

    The reference is :func:`saebook.metrics.reconstruction_metrics` (its ``ce_with_sae``,
    from SAELens' ``run_with_saes(..., exclude_special_tokens=[bos])``). Cases: a few rows,
    one row and a short prefix.
    """
    cases = _metrics_cases(model, sae, tokens)
    check_function(fn, reference_ce_with_sae, cases, atol=1e-4, rtol=1e-4)


def check_topk_thresholds(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(pre, topk_acts) -> (d_sae,)`` JumpReLU thresholds fitted to a TopK SAE.

    ``pre`` is ``(n, d_sae)``: a TopK SAE's pre-activations (after any decoder-norm
    rescaling) on a sample; ``topk_acts`` its activations there. For a latent that fires
    ``c`` times under TopK the threshold is the ``(c + 1)``-th largest of its pre-activations
    (so it fires exactly ``c`` times with a strict ``pre > threshold``); a latent that never
    fires gets its largest, one that fires on every row its smallest minus 1. The reference is
    :func:`saebook.architectures.jumprelu_from_topk` (its ``threshold``), run on SAELens
    ``TopKSAE``s with random weights. Cases: with and without decoder-norm rescaling,
    ``k = 1``, a sample of three rows where some latents fire on every row, and latents that
    never fire.
    """
    from sae_lens import TopKSAE, TopKSAEConfig

    from saebook.architectures import encode_from_formula, jumprelu_from_topk, pre_activations

    g = _generator(16)
    d_in, d_sae = 6, 12
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_in, generator=g) * torch.linspace(0.5, 3.0, d_sae)[:, None]
    b_enc = torch.randn(d_sae, generator=g) * 0.2
    b_dec = torch.randn(d_in, generator=g) * 0.3
    x = torch.randn(64, d_in, generator=g)
    silent = b_enc.clone()
    silent[[2, 9]] = -100.0  # these two never make the top k
    configs = [
        ("k=4, no rescaling", x, b_enc, 4, False),
        ("k=4, rescaled by decoder norms", x, b_enc, 4, True),
        ("k=1", x, b_enc, 1, True),
        ("three rows, k=10: latents firing on every row", x[:3], b_enc, 10, False),
        ("latents that never fire", x, silent, 3, False),
    ]
    cases: list[Case] = []
    expected: dict[str, Tensor] = {}
    for name, xs, bias, k, rescale in configs:
        sae = TopKSAE(
            TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, rescale_acts_by_decoder_norm=rescale)
        )
        sae.load_state_dict({"W_enc": W_enc, "b_enc": bias, "W_dec": W_dec, "b_dec": b_dec})
        expected[name] = jumprelu_from_topk(sae, xs).threshold.detach().clone()
        cases.append((name, (pre_activations(sae, xs), encode_from_formula(sae, xs), name), {}))

    def reference(pre: Tensor, acts: Tensor, name: str) -> Tensor:
        return expected[name]

    def reader(pre: Tensor, acts: Tensor, name: str) -> Tensor:
        return torch.as_tensor(fn(pre, acts)).float()

    check_function(reader, reference, cases)


# --- Part 1, chapter 8: Neuronpedia workflows ----------------------------------------------

#: Neuronpedia ids the URL checker builds lists for (real ids of public SAEs, and an odd one).
_NP_IDS = ("gpt2-small/8-res-jb", "gemma-2-2b/20-gemmascope-res-16k", "pythia-70m-deduped/3-res-sm")


def reference_list_url(neuronpedia_id: str, indices: list[int], name: str) -> str:
    """:func:`saebook.neuronpedia.list_url` for an SAE's id (the reference)."""
    from saebook.neuronpedia import list_url

    return list_url(neuronpedia_id, list(indices), name)


def check_list_url(fn: Callable[[str, list[int], str], str]) -> None:
    """Check ``fn(neuronpedia_id, indices, name) -> str``: a Neuronpedia quick-list URL.

    The URL is ``https://www.neuronpedia.org/quick-list/?name=<quoted name>&features=<quoted
    JSON>``, the JSON a list of ``{"modelId", "layer", "index"}`` (index as a string) in the
    order given, quoted with ``urllib.parse.quote``. Cases: one latent, several, a repeated
    latent, a name with spaces and ``&``, and a source with several dashes.
    """
    cases: list[Case] = [
        ("one latent", (_NP_IDS[0], [6], "one"), {}),
        ("three latents in the given order", (_NP_IDS[0], [9, 2, 40], "three"), {}),
        ("a repeated latent", (_NP_IDS[2], [5, 5], "twice"), {}),
        ("a name with spaces and &", (_NP_IDS[1], [123], "cats & dogs list"), {}),
        ("a gemma-scope source", (_NP_IDS[1], [0, 16383], "edges"), {}),
    ]
    check_function(fn, reference_list_url, cases)


def reference_top_activations(payload: dict, k: int) -> list[tuple[str, float]]:
    """``(token at the maximum, maxValue)`` of a feature JSON's ``k`` strongest contexts."""
    from saebook.neuronpedia import parse_feature, top_activation_tokens

    return top_activation_tokens(parse_feature(payload), k)


def _feature_payload(records: list[tuple[list[str], list[float]]]) -> dict:
    acts = [
        {
            "tokens": tokens,
            "values": values,
            "maxValue": max(values),
            "maxValueTokenIndex": values.index(max(values)),
        }
        for tokens, values in records
    ]
    return {"modelId": "m", "layer": "1-x", "index": "0", "activations": acts}


def check_top_activations(fn: Callable[[dict, int], list[tuple[str, float]]]) -> None:
    """Check ``fn(payload, k)``: the top contexts of a ``GET /api/feature`` answer.

    For the ``k`` contexts with the largest ``maxValue`` (largest first; ties keep the
    answer's order), ``(tokens[maxValueTokenIndex], maxValue)``. Cases: the shipped offline
    fixture, contexts out of order, the peak on the first and last token, ties, ``k`` larger
    than the number of contexts, and ``k = 0``.
    """
    from saebook.neuronpedia import load_fixture

    shuffled = _feature_payload(
        [
            (["<b>", " a", " cat"], [0.0, 0.5, 2.0]),
            (["<b>", " dog", " ran"], [0.0, 4.0, 1.0]),
            (["<b>", " the"], [0.0, 0.25]),
        ]
    )
    edges = _feature_payload([(["<b>", " x"], [0.0, 1.0]), (["first", " y"], [3.0, 0.0])])
    ties = _feature_payload([(["<b>", " p"], [0.0, 1.0]), (["<b>", " q"], [0.0, 1.0])])
    cases: list[Case] = [
        ("the shipped fixture, k=3", (load_fixture("feature"), 3), {}),
        ("contexts out of order, k=2", (shuffled, 2), {}),
        ("the peak on the first and last token, k=2", (edges, 2), {}),
        ("two contexts tied, k=2", (ties, 2), {}),
        ("k larger than the number of contexts", (shuffled, 10), {}),
        ("k=0", (shuffled, 0), {}),
    ]
    check_function(fn, reference_top_activations, cases)


def reference_rank_hits(payload: dict, k: int) -> list[tuple[str, int, float]]:
    """:func:`saebook.neuronpedia.rank_explanations` of a parsed explanation search answer."""
    from saebook.neuronpedia import parse_explanation_search, rank_explanations

    return rank_explanations(parse_explanation_search(payload), k)


def _search_payload(rows: list[tuple[str, int, float | None]]) -> dict:
    results = [
        {"modelId": "m", "layer": source, "index": str(index), "description": "d"}
        | ({} if score is None else {"cosine_similarity": score})
        for source, index, score in rows
    ]
    return {"results": results}


def check_rank_hits(fn: Callable[[dict, int], list[tuple[str, int, float]]]) -> None:
    """Check ``fn(payload, k)``: the best distinct latents of an explanation search answer.

    Each latent (``layer``, ``index`` as an int) counts once with its best score
    (``cosine_similarity``, else ``score``); results without a score are dropped; the ``k``
    best come as ``(layer, index, score)``, largest score first, ties by layer then index.
    Cases: the shipped fixture, a latent with two explanations, ties, missing scores and
    ``k`` larger than the number of latents.
    """
    from saebook.neuronpedia import load_fixture

    twice = _search_payload([("1-x", 4, 0.3), ("1-x", 9, 0.5), ("1-x", 4, 0.8)])
    ties = _search_payload([("2-x", 1, 0.5), ("1-x", 7, 0.5), ("1-x", 3, 0.5)])
    unscored = _search_payload([("1-x", 1, None), ("1-x", 2, 0.1)])
    cases: list[Case] = [
        ("the shipped fixture, k=5", (load_fixture("explanation_search"), 5), {}),
        ("a latent with two explanations, k=2", (twice, 2), {}),
        ("three tied scores, k=3", (ties, 3), {}),
        ("a result without a score, k=2", (unscored, 2), {}),
        ("k larger than the number of latents", (twice, 10), {}),
        ("k=1", (twice, 1), {}),
    ]
    check_function(fn, reference_rank_hits, cases)
