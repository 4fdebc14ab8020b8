"""Zero-shot vision-language classifiers: images in [0, 1] → cosine similarities to class prompts.

``ZeroShotClassifier`` wraps any image encoder with its preprocessing (resize, channel expansion,
normalization, all batched tensor ops inside ``forward``) and a fixed matrix of class text embeddings
computed once. ``build_zero_shot_classifier`` makes one from an open_clip-style model and tokenizer, a list
of class names and prompt templates, averaging each class's embeddings over templates and re-normalizing,
as open_clip's zero-shot builder does.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ResizeMode = Literal["squash", "shortest_crop", "none"]
TextNorm = Literal["standard", "original"]


class ImagePreprocess(nn.Module):
    """Batched, differentiable preprocessing of [0, 1] images: channels, resize, normalize.

    ``resize_mode``: ``squash`` resizes straight to ``size`` (aspect ratio not kept), ``shortest_crop``
    resizes the shorter side to ``size`` and center-crops (torchvision's ``Resize`` + ``CenterCrop``),
    ``none`` leaves the resolution alone.
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int = 3,
        resize_mode: ResizeMode = "squash",
        interpolation: str = "bilinear",
        antialias: bool = True,
    ) -> None:
        super().__init__()
        if resize_mode not in ("squash", "shortest_crop", "none"):
            raise ValueError(f"resize_mode must be 'squash', 'shortest_crop' or 'none', got {resize_mode!r}")
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.channels = channels
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self.antialias = antialias
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        down = x.shape[-2] > size[0] or x.shape[-1] > size[1]
        kw = {"align_corners": False} if self.interpolation in ("bilinear", "bicubic") else {}
        aa = self.antialias and down and self.interpolation in ("bilinear", "bicubic")
        return F.interpolate(x, size=size, mode=self.interpolation, antialias=aa, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if self.size is not None and self.resize_mode == "squash":
            x = self._resize(x, self.size)
        elif self.size is not None and self.resize_mode == "shortest_crop":
            h, w = x.shape[-2:]
            th, tw = self.size
            scale = max(th / h, tw / w)
            x = self._resize(x, (max(th, round(h * scale)), max(tw, round(w * scale))))
            top = (x.shape[-2] - th) // 2
            left = (x.shape[-1] - tw) // 2
            x = x[..., top : top + th, left : left + tw]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={self.channels}, resize_mode={self.resize_mode}"


class ZeroShotClassifier(nn.Module):
    """Images in [0, 1] → (N, K) cosine similarities between image embeddings and K class embeddings.

    ``image_encoder`` maps preprocessed images to (N, D) embeddings, ``text_embeddings`` is (K, D) (it is
    L2-normalized here and stored as a buffer), ``preprocess`` maps [0, 1] images to the encoder's input.
    """

    def __init__(self, image_encoder: nn.Module, text_embeddings: torch.Tensor, preprocess: nn.Module | Callable) -> None:
        super().__init__()
        if not isinstance(text_embeddings, torch.Tensor) or text_embeddings.dim() != 2:
            raise ValueError("text_embeddings must be a (K, D) tensor")
        self.image_encoder = image_encoder
        self.preprocess = preprocess
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.detach().float(), dim=-1))

    @property
    def num_classes(self) -> int:
        return self.text_embeddings.shape[0]

    def with_prompts(self, classnames: Sequence[str], templates: Sequence[str], text_norm: TextNorm = "standard"
                     ) -> "ZeroShotClassifier":
        """The same image tower over other prompts (needs the text tower kept by the builder)."""
        text = getattr(self, "text_tower", None)
        if text is None:
            raise ValueError("this ZeroShotClassifier was built without its text tower; rebuild it with "
                             "build_zero_shot_classifier to change prompts")
        model, tokenizer = text
        device = self.text_embeddings.device
        emb = build_text_embeddings(model, tokenizer, classnames, templates, device=device, text_norm=text_norm)
        out = ZeroShotClassifier(self.image_encoder, emb, self.preprocess).to(device).eval()
        object.__setattr__(out, "text_tower", text)
        return out

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalized image embeddings (N, D) of [0, 1] images."""
        return F.normalize(self.image_encoder(self.preprocess(x)).float(), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x) @ self.text_embeddings.t()


@torch.no_grad()
def build_text_embeddings(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    device: torch.device | str = "cpu",
    text_norm: TextNorm = "standard",
    max_texts: int = 256,
) -> torch.Tensor:
    """(K, D) class embeddings: each template's text embedding normalized, averaged, re-normalized.

    Captions are encoded whole classes at a time, up to ``max_texts`` captions per forward pass (at least
    one class): ImageNet's 1,000 classes under one template take 4 passes, not 1,000.

    ``text_norm='original'`` reproduces the original Multi-Shield code's Hugging Face path
    (``models/CLIP.py``: ``label_emb = get_text_features(...); label_emb /= torch.norm(label_emb, dim=0)``,
    then the cosine similarity normalizes each row): the *raw* text features (averaged over templates; the
    original has one) are divided by their norm over the class dimension, then each row is normalized.
    """
    if not classnames:
        raise ValueError("classnames must not be empty")
    if not templates:
        raise ValueError("templates must not be empty")
    if text_norm not in ("standard", "original"):
        raise ValueError(f"text_norm must be 'standard' or 'original', got {text_norm!r}")
    if max_texts < 1:
        raise ValueError(f"max_texts must be >= 1, got {max_texts}")
    n_t = len(templates)
    per_pass = max(1, max_texts // n_t)  # whole classes per forward pass, as open_clip's builder batches them
    rows = []
    for start in range(0, len(classnames), per_pass):
        chunk = classnames[start:start + per_pass]
        texts = [t(name) if callable(t) else t.format(name) for name in chunk for t in templates]
        tokens = tokenizer(texts)
        tokens = tokens.to(device) if isinstance(tokens, torch.Tensor) else tokens
        feats = model.encode_text(tokens).float().reshape(len(chunk), n_t, -1)
        if text_norm == "original":
            rows.append(feats.mean(dim=1))
        else:
            rows.append(F.normalize(F.normalize(feats, dim=-1).mean(dim=1), dim=-1))
    emb = torch.cat(rows)
    if text_norm == "original":
        # a feature that is 0 for every class (the LiT's MiniLM tower has two) stays 0 instead of 0/0 = NaN,
        # which would turn every similarity into NaN
        emb = emb / emb.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return F.normalize(emb, dim=-1)


def preprocess_from_open_clip(model: nn.Module, channels: int = 3, resize_mode: ResizeMode = "squash",
                              mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ImagePreprocess:
    """An :class:`ImagePreprocess` with the image size, mean and std of an open_clip model's visual tower
    (``mean``/``std`` given here replace the config's)."""
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(visual, "image_size", 224))
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    mean = mean if mean is not None else cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = std if std is not None else cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    interp = cfg.get("interpolation", "bicubic")
    return ImagePreprocess(size, mean, std, channels=channels, resize_mode=resize_mode,
                           interpolation="bicubic" if interp == "bicubic" else "bilinear")


def build_zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    preprocess: nn.Module | None = None,
    device: torch.device | str = "cpu",
    text_norm: TextNorm = "standard",
    resize_mode: ResizeMode = "squash",
) -> ZeroShotClassifier:
    """A :class:`ZeroShotClassifier` from an open_clip model (``encode_text`` and ``.visual``).

    Text embeddings are computed once here; the returned module only runs the image tower.
    """
    model = model.to(device).eval()
    emb = build_text_embeddings(model, tokenizer, classnames, templates, device=device, text_norm=text_norm)
    if preprocess is None:
        preprocess = preprocess_from_open_clip(model, resize_mode=resize_mode)
    zs = ZeroShotClassifier(model.visual, emb, preprocess).to(device).eval()
    # kept as a plain attribute (not a submodule) so prompts can be changed without re-registering weights
    object.__setattr__(zs, "text_tower", (model, tokenizer))
    return zs
