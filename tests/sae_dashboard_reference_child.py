"""sae-dashboard's own feature data for a model, SAE, tokens and latents saved by
``tests/test_dashboards_reference.py``.

Runs inside sae-dashboard's separate virtualenv (``benchmarks/sidevenv.py``):
``python sae_dashboard_reference_child.py DIR``. ``DIR`` holds ``model.pt`` (TransformerLens
config dict + state dict, LayerNorms unfolded), ``sae/`` (``SAE.save_model``) and ``inputs.pt``
(tokens, latents, BOS id, token minibatch size). Nothing here re-implements a dashboard: it
rebuilds the model with this environment's TransformerLens, folds the LayerNorms with
TransformerLens' own ``fold_ln`` (so that sae-dashboard's ``feature direction @ W_U`` includes
the final LayerNorm's weight and centring, as the book's logit effects do), runs
``SaeVisRunner.run`` and prints its data as one JSON line.

The runner is run twice: on the folded model (the comparison) and on the unfolded model as
loaded (sae-dashboard's default use, which multiplies by the bare ``W_U``), so the caller can
say how much the fold matters on this model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE, HookedSAETransformer
from transformer_lens import HookedTransformerConfig


def build(saved: dict, fold: bool) -> HookedSAETransformer:
    """The saved model, with its LayerNorms folded by TransformerLens when ``fold``."""
    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    cfg = {k: v for k, v in saved["cfg"].items() if k in fields and k not in ("n_params",)}
    # attention masks are buffers each version builds itself (shapes differ between them)
    weights = {k: v.clone() for k, v in saved["state_dict"].items()
               if not k.endswith(("mask", "IGNORE"))}  # fmt: skip
    if fold:
        cfg["normalization_type"] = "LNPre"
        model = HookedSAETransformer(HookedTransformerConfig(**cfg))
        # fold only the LayerNorms: centring the writing weights or folding value biases would
        # change the activations at the SAE's hook
        model.load_and_process_state_dict(
            weights, fold_ln=True, center_writing_weights=False, center_unembed=False,
            fold_value_biases=False, refactor_factored_attn_matrices=False,
        )  # fmt: skip
    else:
        model = HookedSAETransformer(HookedTransformerConfig(**cfg))
        missing, _ = model.load_state_dict(weights, strict=False)
        lost = [k for k in missing if not k.endswith(("IGNORE", "mask"))]
        if lost:
            raise SystemExit(f"weights missing after loading: {lost}")
    return model.eval()


def load_sae(folder: Path) -> SAE:
    """The saved SAE. The runner folds decoder norms into the encoder, which SAELens refuses
    for a TopK SAE that does not rescale by them (the fold would change which latents win):
    such an SAE is used as it is, its activations and decoder rows unscaled."""
    sae = SAE.load_from_disk(str(folder / "sae"), device="cpu")
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", True) is False:
        sae.fold_W_dec_norm = lambda: None
    return sae


def run(model, folder: Path, inputs: dict) -> dict:
    sae = load_sae(folder)
    config = SaeVisConfig(
        hook_point=sae.cfg.metadata.hook_name,
        features=inputs["latents"],
        minibatch_size_features=len(inputs["latents"]),
        minibatch_size_tokens=inputs["batch_size"],
        ignore_tokens={inputs["bos"]},
        device="cpu",
        verbose=False,
    )
    seq_cfg = config.feature_centric_layout.seq_cfg
    seq_cfg.buffer = None  # top activations from every position, as the book's dashboards
    seq_cfg.top_acts_group_size = inputs["n_top"]
    data = SaeVisRunner(config).run(encoder=sae, model=model, tokens=inputs["tokens"])
    out = {}
    for latent in inputs["latents"]:
        feat = data.feature_data_dict[latent]
        groups = []
        for group in feat.sequence_data.seq_group_data:
            groups.append({
                "title": group.title,
                "rows": [s.original_index for s in group.seq_data],
                "pos": [s.qualifying_token_index for s in group.seq_data],
                "acts": [s.feat_acts for s in group.seq_data],
            })  # fmt: skip
        table = feat.logits_table_data
        out[str(latent)] = {
            "density_title": feat.acts_histogram_data.title,
            "groups": groups,
            "top_ids": table.top_token_ids,
            "top_logits": table.top_logits,
            "bottom_ids": table.bottom_token_ids,
            "bottom_logits": table.bottom_logits,
        }
    return out


def main() -> None:
    folder = Path(sys.argv[1])
    torch.set_num_threads(1)
    saved = torch.load(folder / "model.pt", weights_only=False)
    inputs = torch.load(folder / "inputs.pt")
    tokens = inputs["tokens"]
    models = {"folded": build(saved, fold=True), "unfolded": build(saved, fold=False)}
    with torch.no_grad():
        check = {name: m(tokens[:1])[0, -1, :8].tolist() for name, m in models.items()}
    result = {name: run(m, folder, inputs) for name, m in models.items()}
    print(json.dumps({"logits": check, "features": result}))


if __name__ == "__main__":
    main()
