"""Steering generation with SAE latents, and measuring whether it worked.

Steering adds ``coefficient * d_i`` to the residual stream at every position while the model
generates, where ``d_i`` is latent ``i``'s decoder direction taken to the residual stream
(:func:`saebook.directions.decoder_directions`). It is added where the SAE writes: at its own
hook for residual-stream and block-output SAEs, at the attention (MLP) output for ``hook_z``
(``mlp.hook_post``) SAEs. Two numbers say whether it worked: how often the target concept
appears in the generated text, and how surprised the *unsteered* model is by that text (a
fluency cost). :func:`steering_sweep` measures both over a range of coefficients, with the
same sampling seed for every coefficient, so coefficient 0 reproduces plain generation.

Chapters: intro/06
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from tqdm import tqdm

from saebook import neuronpedia
from saebook.directions import check_latent, decoder_directions

__all__ = [
    "SteeringResult",
    "generate",
    "generated_loss",
    "neuronpedia_steer",
    "steering_hook",
    "steering_hook_name",
    "steering_sweep",
    "text_label_concept",
    "token_set_concept",
]

HookFn = Callable[[Tensor, object], Tensor]
Concept = Callable[[Int[Tensor, "batch seq"]], Bool[Tensor, "batch seq"]]

_LAYER_HOOK = re.compile(r"^blocks\.(\d+)\.(attn\.hook_z|mlp\.hook_post)$")


def steering_hook(direction: Float[Tensor, " d_model"], coefficient: float) -> HookFn:
    """A TransformerLens hook that adds ``coefficient * direction`` at every position.

    The returned function maps an activation ``(batch, pos, d_model)`` to the steered one
    (a new tensor; the input is not modified).
    """
    if not isinstance(direction, Tensor) or direction.ndim != 1:
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction)
        raise ValueError(f"direction must be a 1-D tensor (d_model,), got {shape}")
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)):
        raise TypeError(f"coefficient must be a number, got {type(coefficient).__name__}")
    shift = coefficient * direction

    def hook(activation: Tensor, hook: object = None) -> Tensor:
        if activation.shape[-1] != shift.shape[0]:
            raise ValueError(
                f"activation must end in d_model={shift.shape[0]}, got {tuple(activation.shape)}"
            )
        return activation + shift.to(activation.device, activation.dtype)

    return hook


def steering_hook_name(sae: SAE) -> str:
    """The residual-width hook where ``sae``'s latents write (and where steering adds).

    ``hook_name_out`` for a transcoder, else ``hook_name``; an attention ``hook_z`` SAE
    writes at ``blocks.L.hook_attn_out`` and an MLP ``hook_post`` SAE at ``blocks.L.hook_mlp_out``.
    """
    hook = str(sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name)
    match = _LAYER_HOOK.match(hook)
    if match:
        kind = "attn" if match.group(2).startswith("attn") else "mlp"
        return f"blocks.{match.group(1)}.hook_{kind}_out"
    return hook


def _check_prompts(model: HookedSAETransformer, prompts: object, new_tokens: int) -> Tensor:
    if not isinstance(prompts, Tensor) or prompts.ndim != 2 or prompts.is_floating_point():
        shape = tuple(prompts.shape) if isinstance(prompts, Tensor) else type(prompts).__name__
        raise ValueError(f"prompts must be a 2-D int tensor (batch, pos), got {shape}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive int, got {new_tokens!r}")
    if prompts.shape[1] + new_tokens > model.cfg.n_ctx:
        raise ValueError(
            f"prompts length + new_tokens must be <= n_ctx={model.cfg.n_ctx}, got "
            f"{prompts.shape[1]} + {new_tokens}"
        )
    return prompts.to(model.cfg.device)


@torch.no_grad()
def generate(
    model: HookedSAETransformer,
    prompts: Int[Tensor, "batch pos"],
    new_tokens: int,
    hooks: Sequence[tuple[str, HookFn]] = (),
    seed: int = 0,
    temperature: float = 1.0,
) -> Int[Tensor, "batch total"]:
    """Sample ``new_tokens`` after each prompt with ``hooks`` active, seeded for reproducibility.

    Uses ``HookedTransformer.generate`` (with its key-value cache) inside ``model.hooks``;
    the global torch generator is seeded with ``seed`` first, so two calls with the same
    seed and hooks return the same tokens. Returns prompts and continuations together,
    ``(batch, pos + new_tokens)``.
    """
    prompts = _check_prompts(model, prompts, new_tokens)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    torch.manual_seed(seed)
    with model.hooks(fwd_hooks=list(hooks)):
        tokens = model.generate(
            prompts,
            max_new_tokens=new_tokens,
            do_sample=True,
            temperature=temperature,
            stop_at_eos=False,
            prepend_bos=False,
            verbose=False,
        )
    return tokens.clone()  # generate runs in inference mode; give back an ordinary tensor


@torch.no_grad()
def generated_loss(
    model: HookedSAETransformer, tokens: Int[Tensor, "batch total"], start: int
) -> float:
    """Mean next-token loss (nats) of ``model`` on ``tokens[:, start:]`` given what precedes.

    With the unsteered model and steered text this is a fluency cost: how surprising the
    continuation is to the model without the steering.
    """
    if not 1 <= start < tokens.shape[1]:
        raise ValueError(f"start must be in [1, {tokens.shape[1]}), got {start}")
    per_token = model(tokens, return_type="loss", loss_per_token=True)  # predicts i + 1
    return float(per_token[:, start - 1 :].mean())


def token_set_concept(token_ids: Int[Tensor, " n"] | Sequence[int]) -> Concept:
    """A concept that is True wherever a token is one of ``token_ids``."""
    ids = torch.as_tensor(list(token_ids) if not isinstance(token_ids, Tensor) else token_ids)
    if ids.ndim != 1 or ids.numel() == 0 or ids.is_floating_point():
        raise ValueError(f"token_ids must be a non-empty 1-D set of ints, got {ids.tolist()!r}")

    def concept(tokens: Tensor) -> Tensor:
        return torch.isin(tokens, ids.to(tokens.device))

    return concept


def text_label_concept(
    labeller: Callable[[list[str]], dict[str, list[bool]]], token_strs: Sequence[str], label: str
) -> Concept:
    """A concept read by a text labeller: True where ``labeller`` gives a token ``label``.

    ``token_strs[i]`` is the decoded string of token id ``i``; ``labeller`` takes the strings
    of one row and returns label -> one bool per token (as ``tinyworld.label_tokens`` does).
    """
    strings = list(token_strs)

    def concept(tokens: Tensor) -> Tensor:
        rows = []
        for row in tokens.tolist():
            flags = labeller([strings[i] for i in row])
            if label not in flags:
                raise KeyError(
                    f"label must be one of the labeller's {sorted(flags)}, got {label!r}"
                )
            rows.append(flags[label])
        return torch.tensor(rows, dtype=torch.bool, device=tokens.device)

    return concept


@dataclass
class SteeringResult:
    """A coefficient sweep: the table of measurements and the generated tokens per coefficient."""

    table: pd.DataFrame
    tokens: dict[float, Int[Tensor, "batch total"]]
    prompt_len: int
    hook_name: str


def steering_sweep(
    model: HookedSAETransformer,
    sae: SAE,
    latent: int,
    prompts: Int[Tensor, "batch pos"],
    coefficients: Sequence[float],
    concept: Concept,
    new_tokens: int,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = True,
) -> SteeringResult:
    """Generate with ``latent`` steered at each coefficient and measure concept and fluency.

    ``concept`` maps generated tokens ``(batch, total)`` to a bool tensor of the same shape
    (True where the target concept appears). For each coefficient the table has
    ``concept_frequency`` (the share of generated tokens that are True), ``loss`` (the
    unsteered model's mean loss on the generated tokens, :func:`generated_loss`). Every
    coefficient uses the same ``seed``.
    """
    latent = check_latent(sae, latent)
    if not coefficients:
        raise ValueError("coefficients must hold at least one number, got none")
    prompts = _check_prompts(model, prompts, new_tokens)
    hook_name = steering_hook_name(sae)
    if hook_name not in model.hook_dict:
        raise ValueError(f"sae writes at {hook_name!r}, which the model has no hook for")
    direction = decoder_directions(model, sae, [latent])[0]
    start = prompts.shape[1]
    rows, generated = [], {}
    for coefficient in tqdm(coefficients, desc="Steering sweep", disable=not progress):
        hook = steering_hook(direction, float(coefficient))
        tokens = generate(model, prompts, new_tokens, [(hook_name, hook)], seed, temperature)
        flags = concept(tokens)
        if not isinstance(flags, Tensor) or flags.shape != tokens.shape:
            raise ValueError(
                f"concept must return a bool tensor shaped like its input {tuple(tokens.shape)}, "
                f"got {tuple(flags.shape) if isinstance(flags, Tensor) else type(flags).__name__}"
            )
        generated[float(coefficient)] = tokens.cpu()
        rows.append(
            {
                "coefficient": float(coefficient),
                "concept_frequency": float(flags[:, start:].float().mean()),
                "loss": generated_loss(model, tokens, start),
            }
        )
    return SteeringResult(pd.DataFrame(rows), generated, start, hook_name)


def neuronpedia_steer(
    sae: SAE,
    latent: int,
    prompt: str,
    strength: float,
    n_tokens: int = 32,
    temperature: float = 0.5,
    seed: int = 0,
    timeout: float = 20.0,
) -> dict[str, str] | str:
    """Ask Neuronpedia's steering API to generate from ``prompt`` with ``latent`` steered.

    Returns the service's answer (a dict with the ``STEERED`` and ``DEFAULT`` completions)
    when the SAE has a ``cfg.metadata.neuronpedia_id`` and www.neuronpedia.org is reachable;
    otherwise, or if the request fails, one line saying why. It never raises for network
    problems. An API key, if the service asks for one, is read from ``NEURONPEDIA_API_KEY``.
    """
    latent = check_latent(sae, latent)
    np_id = sae.cfg.metadata.neuronpedia_id
    if not np_id or "/" not in str(np_id):
        return (
            f"Neuronpedia steering skipped: this SAE has no cfg.metadata.neuronpedia_id "
            f"(got {np_id!r}); steer locally with steering_sweep."
        )
    if not neuronpedia.online():
        return (
            f"Neuronpedia steering skipped: {neuronpedia.NEURONPEDIA_HOST[0]} is not reachable "
            "from this machine; the local sweep above is the result."
        )
    body = neuronpedia.steer_body(
        str(np_id), latent, prompt, strength, n_tokens=n_tokens, temperature=temperature, seed=seed
    )
    client = neuronpedia.NeuronpediaClient(timeout=timeout)  # reads NEURONPEDIA_API_KEY
    try:
        answer = client.request("POST", "/api/steer", body)
    except neuronpedia.NeuronpediaError as err:  # HTTP errors, timeouts, bad JSON: report
        return f"Neuronpedia steering failed: {err}"
    if not isinstance(answer, dict):
        return f"Neuronpedia steering returned an unexpected answer: {str(answer)[:200]}"
    return {k: str(v) for k, v in answer.items()}
