"""Time sae-dashboard's runner on a model, SAE, tokens and latents saved by ``run.py``.

Runs inside the separate virtualenv that ``run.py`` builds for sae-dashboard (its pins do not
install beside the book's): ``python sae_dashboard_child.py DIR THREADS``. ``DIR`` holds
``model.pt`` (TransformerLens config dict + state dict), ``sae/`` (``SAE.save_model``) and
``inputs.pt`` (tokens, named latent sets with their repeats, minibatch sizes). Prints one JSON
line: the best run time per latent set, and the logits of the first row so the caller can
check the model was rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE, HookedSAETransformer
from transformer_lens import HookedTransformerConfig


def main() -> None:
    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]))
    saved = torch.load(folder / "model.pt", weights_only=False)
    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    cfg = {k: v for k, v in saved["cfg"].items() if k in fields and k not in ("n_params",)}
    model = HookedSAETransformer(HookedTransformerConfig(**cfg))
    # attention masks are buffers each version builds itself (shapes differ between them)
    weights = {k: v for k, v in saved["state_dict"].items() if not k.endswith(("mask", "IGNORE"))}
    missing, _ = model.load_state_dict(weights, strict=False)
    weights = [k for k in missing if not k.endswith(("IGNORE", "mask"))]
    if weights:
        raise SystemExit(f"weights missing after loading: {weights}")
    model.eval()
    inputs = torch.load(folder / "inputs.pt")
    tokens = inputs["tokens"]
    with torch.no_grad():
        check = model(tokens[:1])[0, -1, :8].tolist()
    seconds = {}
    for name, (latents, repeats) in inputs["latent_sets"].items():
        best = float("inf")
        for _ in range(repeats):
            sae = SAE.load_from_disk(str(folder / "sae"), device="cpu")  # the runner folds W_dec
            if getattr(sae.cfg, "rescale_acts_by_decoder_norm", True) is False:
                sae.fold_W_dec_norm = lambda: None  # SAELens refuses this fold: use it as it is
            config = SaeVisConfig(
                hook_point=sae.cfg.metadata.hook_name,
                features=latents,
                minibatch_size_features=min(len(latents), inputs["feature_batch"]),
                minibatch_size_tokens=inputs["batch_size"],
                device="cpu",
                verbose=False,
            )
            start = time.perf_counter()
            SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
            best = min(best, time.perf_counter() - start)
        seconds[name] = best
    print(json.dumps({"seconds": seconds, "logits": check}))


if __name__ == "__main__":
    main()
