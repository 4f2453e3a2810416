"""Hugging Face Decision Transformers in and out: transformers' `DecisionTransformerModel` folders as this
project's model, and this project's checkpoints as such folders, the same network both ways.

The architectures agree (Chen et al.'s GPT-2 with the same token layout; the same module names for the
embeddings, `embed_ln`, `ln_f` and `predict_action`) but for three details, mapped exactly here:
- GPT-2's `Conv1D` layers (`c_attn`, `c_proj`, `c_fc`) hold a `Linear`'s weight transposed;
- transformers' model adds GPT-2's position embedding at position 0 to every token after `embed_ln`: a
  constant, which folds into `embed_ln`'s bias (and is zero in an exported folder);
- its MLP activation is the config's `activation_function` (`relu` by default), the model's `activation`.
What does not map (`action_tanh: false`, GPT-2's layer-index or upcast attention scaling, an MLP other than
4x wide) is refused with a paragraph. The folders' `predict_state` and `predict_return` heads, which DT's
action loss never trains, are dropped on the way in and written as zeros on the way out.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dtrepro.agent.model import ModelConfig
from dtrepro.runtime.errors import DtreproError

CONV1D = {"attn.c_attn": "qkv", "attn.c_proj": "proj", "mlp.c_fc": "mlp.0", "mlp.c_proj": "mlp.2"}
NORMS = {"ln_1": "ln1", "ln_2": "ln2"}
SAME = ("embed_timestep.weight", "embed_ln.weight") + tuple(
    f"{m}.{p}" for m in ("embed_return", "embed_state", "embed_action", "predict_action.0") for p in ("weight", "bias")
)
MUST = {"action_tanh": True, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False}
MUST |= {"reorder_and_upcast_attn": False, "add_cross_attention": False}


def config_from_hub(hub: dict, context_len: int, where: str) -> ModelConfig:
    """This project's model config for a transformers DecisionTransformerConfig (as config.json holds it)."""
    wrong = {k: hub.get(k, v) for k, v in MUST.items() if hub.get(k, v) != v}
    if hub.get("n_inner") not in (None, 4 * hub.get("hidden_size", 0)):
        wrong["n_inner"] = hub["n_inner"]
    if hub.get("activation_function", "relu") not in ("relu", "gelu", "gelu_new"):
        wrong["activation_function"] = hub["activation_function"]
    if hub.get("model_type") != "decision_transformer" or wrong:
        raise DtreproError(
            f"{where} is not a Decision Transformer this project's model can be: model_type "
            f"{hub.get('model_type')!r}, and {wrong or 'no setting'} where the model needs {MUST}, an MLP 4x wide and "
            f"a relu, gelu or gelu_new activation. Only transformers' DecisionTransformerModel maps exactly."
        )
    dropouts = {hub.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    return ModelConfig(
        embed_dim=hub["hidden_size"],
        layers=hub["n_layer"],
        heads=hub["n_head"],
        dropout=float(max(dropouts)),
        activation=hub.get("activation_function", "relu"),
        state_dim=hub["state_dim"],
        act_dim=hub["act_dim"],
        context_len=context_len,
        max_timestep=hub["max_ep_len"],
    )


def names(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(transformers' name, ours, whether transposed) of every weight the two share, embed_ln's bias aside."""
    pairs = [(n, n, False) for n in SAME] + [(f"encoder.ln_f.{p}", f"ln_f.{p}", False) for p in ("weight", "bias")]
    for i in range(cfg.layers):
        theirs, ours = f"encoder.h.{i}.", f"blocks.{i}."
        pairs += [(f"{theirs}{t}.{p}", f"{ours}{o}.{p}", False) for t, o in NORMS.items() for p in ("weight", "bias")]
        pairs += [
            (f"{theirs}{t}.{p}", f"{ours}{o}.{p}", p == "weight") for t, o in CONV1D.items() for p in ("weight", "bias")
        ]
    return pairs


def weights_from_hub(hub: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """This project's state dict from a DecisionTransformerModel's."""
    ours = {o: hub[t].t().contiguous() if flip else hub[t] for t, o, flip in names(cfg)}
    ours["embed_ln.bias"] = hub["embed_ln.bias"] + hub["encoder.wpe.weight"][0]  # the position-0 constant
    return ours


def weights_to_hub(ours: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A DecisionTransformerModel's state dict from this project's (the heads DT does not train, zero)."""
    h, hub = cfg.embed_dim, {t: ours[o].t() if flip else ours[o] for t, o, flip in names(cfg)}
    hub |= {"embed_ln.bias": ours["embed_ln.bias"], "encoder.wte.weight": torch.zeros(1, h)}
    hub |= {"encoder.wpe.weight": torch.zeros(1024, h), "predict_return.weight": torch.zeros(1, h)}
    hub |= {"predict_state.weight": torch.zeros(cfg.state_dim, h), "predict_state.bias": torch.zeros(cfg.state_dim)}
    hub |= {"predict_return.bias": torch.zeros(1)}
    return {k: v.detach().float().cpu().contiguous() for k, v in hub.items()}


def config_to_hub(cfg: ModelConfig) -> dict:
    """The config.json of a DecisionTransformerModel that is this project's model."""
    return {
        "architectures": ["DecisionTransformerModel"],
        "model_type": "decision_transformer",
        "state_dim": cfg.state_dim,
        "act_dim": cfg.act_dim,
        "hidden_size": cfg.embed_dim,
        "max_ep_len": cfg.max_timestep,
        "action_tanh": True,
        "vocab_size": 1,
        "n_positions": 1024,
        "n_layer": cfg.layers,
        "n_head": cfg.heads,
        "n_inner": None,
        "activation_function": cfg.activation,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def read_hub_folder(folder: Path, context_len: int) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A `save_pretrained` folder (config.json and model.safetensors, or pytorch_model.bin) as this project's
    config and weights."""
    try:
        hub = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise DtreproError(
            f"{folder} holds no readable config.json ({err}): give the folder `save_pretrained` wrote (config.json "
            f"and model.safetensors), e.g. one downloaded with `huggingface-cli download`."
        ) from None
    cfg = config_from_hub(hub, context_len, str(folder))
    if (folder / "model.safetensors").is_file():
        state = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise DtreproError(f"{folder} has a config.json but no model.safetensors or pytorch_model.bin weights.")
    return cfg, weights_from_hub(state, cfg)


def write_hub_folder(cfg: ModelConfig, weights: dict[str, torch.Tensor], folder: Path, card: str) -> None:
    """`folder` as `save_pretrained` writes it (config.json, model.safetensors), with `card` as its README.md."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_to_hub(cfg), indent=2) + "\n")
    save_file(weights_to_hub(weights, cfg), folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "README.md").write_text(card)
