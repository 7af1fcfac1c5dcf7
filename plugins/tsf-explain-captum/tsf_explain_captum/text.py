"""Token importances for ``text_classification`` handlers.

Eager models: LayerIntegratedGradients over the embedding layer (``explain.layer`` in
model-config.yaml, else the model's first ``nn.Embedding``), from a baseline of padding that
keeps special tokens.  TorchScript models hide their layers from hooks, so each token is
instead replaced by padding in turn (Captum's FeatureAblation).  The answer per request is
TorchServe's ``{"words", "importances", "delta"}`` plus ``target``, ``label`` and ``method``;
importances are normalised to unit length.
"""

from __future__ import annotations

from typing import Any

from tsf.errors import HandlerError

from .options import model_settings, parse_request, request_error, resolve_class


def embedding_layer(model: Any, name: str | None) -> Any:
    """The layer to attribute, or ``None`` when the model cannot take hooks (TorchScript)."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return None
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise HandlerError(f"explain.layer {name!r} is not a layer of this model") from None
    return next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)


def explain_text(context: Any, handler: Any, requests: list[dict]) -> list:
    import torch
    from captum.attr import FeatureAblation, LayerIntegratedGradients

    settings = model_settings(context)
    layer = embedding_layer(context.model, settings.get("layer"))
    tokenizer = handler.tokenizer

    def forward(input_ids: Any, mask: Any) -> Any:
        return handler.forward(context, (input_ids, mask))

    results = []
    for index, request in enumerate(requests):
        asked = parse_request(context, request, index, settings)
        if asked.png:
            raise request_error(context, index, "PNG explanations are for image models; "
                                "ask for JSON")
        ids = tokenizer.encode(handler.text(context, request, index),
                               int(handler.options["max_length"]))
        input_ids = torch.tensor([ids], dtype=torch.long, device=context.device)
        mask = torch.ones_like(input_ids)
        with torch.no_grad():
            logits = forward(input_ids, mask)
        target = resolve_class(context, index, asked.target, handler.labels,
                               int(logits.shape[-1]), int(logits[0].argmax()))
        keep = tokenizer.special_mask(ids)
        baseline = torch.tensor([[tok if special else tokenizer.pad_id
                                  for tok, special in zip(ids, keep)]], device=context.device)
        delta = None
        if layer is not None:
            with torch.enable_grad():
                attributions, delta = LayerIntegratedGradients(forward, layer).attribute(
                    input_ids, baselines=baseline, additional_forward_args=(mask,),
                    target=target, n_steps=asked.n_steps,
                    internal_batch_size=int(settings["internal_batch_size"]),
                    return_convergence_delta=True)
            importances = attributions.sum(dim=-1)[0]
            method = "layer_integrated_gradients"
        else:
            with torch.no_grad():
                importances = FeatureAblation(forward).attribute(
                    input_ids, baselines=baseline, additional_forward_args=(mask,),
                    target=target)[0].float()
            method = "feature_ablation"
        importances = importances.detach().float().cpu()
        norm = importances.norm()
        if norm > 0:
            importances = importances / norm
        results.append({"words": tokenizer.token_strings(ids),
                        "importances": importances.tolist(),
                        "delta": float(delta[0]) if delta is not None else None,
                        "target": target, "label": handler.labels(target), "method": method})
    return results
