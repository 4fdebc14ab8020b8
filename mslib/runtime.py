"""How a loaded model runs in the study: on the profile's device with its CUDA speed settings (channels_last,
bf16 autocast with float32 outputs), and a VLM's similarities scaled into logits for cross-entropy attacks.
The executor and the benchmarks wrap every model through here, so a result records the settings it ran with."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .profiles import Profile

VLM_LOGIT_SCALE = 100.0


class Autocast(nn.Module):
    """Runs ``module`` under CUDA autocast (bf16) and returns float32 outputs, so attack math stays float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    @property
    def num_classes(self) -> int | None:
        return getattr(self.module, "num_classes", None)

    @property
    def rejects(self) -> bool:
        return bool(getattr(self.module, "rejects", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.dtype):
            return self.module(x).float()


def speed_settings(profile: Profile) -> dict[str, Any]:
    """The profile's CUDA speed settings that are in effect (empty on CPU or when off), for result records."""
    if not str(profile.device).startswith("cuda"):
        return {}
    out: dict[str, Any] = {}
    if profile.precision != "fp32":
        out["precision"] = profile.precision
    if profile.channels_last:
        out["channels_last"] = True
    return out


def prepare_model(model: nn.Module, profile: Profile) -> nn.Module:
    """Move a loaded model to the profile's device and apply its CUDA speed settings (channels_last, bf16)."""
    settings = speed_settings(profile)
    model = model.to(profile.device)
    if settings.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if settings.get("precision") == "bf16":
        model = Autocast(model)
    return model


class ScaledLogits(nn.Module):
    """A VLM's cosine similarities times a CLIP-like logit scale, so CE-based attacks get useful gradients."""

    def __init__(self, vlm: nn.Module, scale: float = VLM_LOGIT_SCALE) -> None:
        super().__init__()
        self.vlm = vlm
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vlm(x) * self.scale


__all__ = ["Autocast", "ScaledLogits", "VLM_LOGIT_SCALE", "prepare_model", "speed_settings"]
