"""Checkers for the book's exercises, one module per part of the book.

An exercise asks the reader to write a function; its checker runs the reader's function and
the reference implementation on the same named cases (ordinary inputs and edge cases) and
compares the outputs. On the first case where they differ it raises ``AssertionError`` naming
the case, the largest absolute difference and both shapes; when every case matches it prints
one line, ``✓ all N cases match``.

:func:`~saebook.checks.core.check_function` is the general tool. Each exercise of the book has
a named checker (``check_<exercise>(fn)``) in the module of its part (:mod:`.toy_models`,
:mod:`.intro`, :mod:`.deeper`, :mod:`.training`, :mod:`.circuits`), re-exported here so
``saebook.checks.check_<exercise>`` works from any chapter.
"""

from __future__ import annotations

from saebook.checks.circuits import (  # noqa: F401
    check_de_embedding,
    check_influence_matrix,
    check_latent_jacobian,
    reference_de_embedding,
    reference_latent_jacobian,
)
from saebook.checks.core import (  # noqa: F401
    NOT_IMPLEMENTED,
    Case,
    check_function,
    not_implemented_error,
    require_answer,
)
from saebook.checks.deeper import (  # noqa: F401
    check_absorption_rate,
    check_detection_scores,
    check_hypergeometric_p,
    check_max_cosine_matches,
    check_set_probability,
    check_variance_explained,
    check_within_label_cosine,
    reference_detection_scores,
    reference_hypergeometric_p,
)
from saebook.checks.intro import (  # noqa: F401
    check_ablation_effects,
    check_attribution_patching,
    check_direct_logit_attribution,
    check_explained_variance,
    check_generated_loss,
    check_head_norms,
    check_jumprelu_encode,
    check_kl_divergence,
    check_latent_summary,
    check_logit_diff,
    check_source_contributions,
    check_steered_greedy,
    check_steering_hook,
    check_top_logits,
    reference_ablation_effects,
    reference_attribution_patching,
    reference_direct_logit_attribution,
    reference_head_norms,
    reference_jumprelu_encode,
    reference_latent_summary,
    reference_logit_diff,
    reference_source_contributions,
    reference_steered_greedy,
    reference_steering_hook,
)
from saebook.checks.toy_models import (  # noqa: F401
    check_dead_latents,
    check_feature_dimensionality,
    check_jumprelu_function,
    check_max_cosine_similarity,
    check_rectangle,
    check_sae_loss,
    check_topk_activation,
    check_toy_forward,
    check_weighted_mse,
    reference_max_cosine_similarity,
    reference_sae_loss,
    reference_toy_forward,
)
from saebook.checks.training import (  # noqa: F401
    DIAGNOSIS_RUNS,
    check_diagnosis,
    check_l2_ratio,
    check_standard_sae_loss,
    check_top_k_by_mean_difference,
    reference_l2_ratio,
)

__all__ = [
    "Case",
    "check_function",
    "NOT_IMPLEMENTED",
    "not_implemented_error",
    "require_answer",
    "check_toy_forward",
    "check_feature_dimensionality",
    "check_sae_loss",
    "check_max_cosine_similarity",
    "check_topk_activation",
    "check_jumprelu_function",
    "check_weighted_mse",
    "check_dead_latents",
    "check_rectangle",
    "reference_toy_forward",
    "reference_sae_loss",
    "reference_max_cosine_similarity",
    "check_top_logits",
    "check_head_norms",
    "reference_head_norms",
    "check_steering_hook",
    "reference_steering_hook",
    "check_jumprelu_encode",
    "reference_jumprelu_encode",
    "check_latent_summary",
    "reference_latent_summary",
    "check_logit_diff",
    "check_direct_logit_attribution",
    "reference_direct_logit_attribution",
    "reference_logit_diff",
    "check_ablation_effects",
    "reference_ablation_effects",
    "check_attribution_patching",
    "reference_attribution_patching",
    "check_source_contributions",
    "reference_source_contributions",
    "check_steered_greedy",
    "check_kl_divergence",
    "check_explained_variance",
    "check_generated_loss",
    "reference_steered_greedy",
    "check_max_cosine_matches",
    "check_within_label_cosine",
    "check_absorption_rate",
    "check_variance_explained",
    "check_hypergeometric_p",
    "check_detection_scores",
    "check_set_probability",
    "reference_hypergeometric_p",
    "reference_detection_scores",
    "check_diagnosis",
    "reference_l2_ratio",
    "check_l2_ratio",
    "check_top_k_by_mean_difference",
    "check_standard_sae_loss",
    "DIAGNOSIS_RUNS",
    "reference_latent_jacobian",
    "check_latent_jacobian",
    "reference_de_embedding",
    "check_de_embedding",
    "check_influence_matrix",
]
