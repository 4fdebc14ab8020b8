"""Multi-Shield: a classifier paired with a zero-shot VLM, abstaining when they disagree.

For classifier logits f (N, K) and VLM cosine similarities s (N, K), with ŷ = argmax f, the defense emits
K + 1 logits: the classifier's K logits and, last, the rejection score

    r(x) = max_k f_k(x) + |max_k s_k(x) − s_ŷ(x)| − tolerance.

The prediction is rejected (label K) exactly when the VLM's similarity for ŷ lies more than ``tolerance``
below its best similarity; otherwise it is ŷ.
"""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_finite_output, check_tolerance, check_unit_range


def rejection_logits(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(N, K+1) Multi-Shield logits from classifier logits ``f`` and VLM similarities ``s`` (both (N, K))."""
    if f.shape != s.shape:
        raise ValueError(
            f"classifier and VLM must score the same classes: classifier gives {tuple(f.shape)}, "
            f"VLM gives {tuple(s.shape)}"
        )
    f_max, y_hat = f.max(dim=1)
    gap = (s.max(dim=1).values - s.gather(1, y_hat[:, None]).squeeze(1)).abs()
    r = f_max + gap.to(f.dtype) - tolerance
    return torch.cat([f, r[:, None]], dim=1)


def decide(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Labels in 0..K from classifier logits and VLM similarities; K means rejected."""
    if f.shape != s.shape:
        raise ValueError(f"classifier gives {tuple(f.shape)} but VLM gives {tuple(s.shape)}")
    y_hat = f.argmax(dim=1)
    gap = s.max(dim=1).values - s.gather(1, y_hat[:, None]).squeeze(1)
    return torch.where(gap > tolerance, torch.full_like(y_hat, f.shape[1]), y_hat)


class MultiShield(nn.Module):
    """``forward(x)`` → K+1 logits (classifier logits, rejection score); ``predict(x)`` → labels in 0..K.

    ``rejects = True`` tells rejection-aware attacks that the last logit means "rejected". Inputs must be
    finite images in [0, 1]; a branch that returns NaN/inf raises in both ``forward`` and ``predict``, so
    the two never disagree silently.
    """

    rejects = True

    def __init__(self, classifier: nn.Module, vlm: nn.Module, tolerance: float = 1e-3) -> None:
        super().__init__()
        check_tolerance(tolerance, "tolerance")
        for arg, m in (("classifier", classifier), ("vlm", vlm)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{arg} must be a torch.nn.Module (images in [0, 1] -> scores), "
                                f"got {type(m).__name__}")
        k_clf = getattr(classifier, "num_classes", None)
        k_vlm = getattr(vlm, "num_classes", None)
        if k_clf is not None and k_vlm is not None and k_clf != k_vlm:
            raise ValueError(f"the VLM scores {k_vlm} classes but the classifier {k_clf}")
        self.classifier = classifier
        self.vlm = vlm
        self.tolerance = tolerance

    @property
    def tolerance(self) -> float:
        """The rejection tolerance (finite, >= 0; checked on every assignment)."""
        return self._tolerance

    @tolerance.setter
    def tolerance(self, value: float) -> None:
        self._tolerance = check_tolerance(value, "tolerance")

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier logits and VLM similarities, each computed once (inputs and outputs checked)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, C, H, W) in [0, 1], got {shape}")
        check_unit_range(x, "x")
        f = check_finite_output(self.classifier(x), "the classifier branch of MultiShield")
        s = check_finite_output(self.vlm(x), "the VLM branch of MultiShield")
        return f, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, s = self.branches(x)
        return rejection_logits(f, s, self.tolerance)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels in 0..K (K = rejected)."""
        f, s = self.branches(x)
        return decide(f, s, self.tolerance)

    @property
    def reject_label(self) -> int | None:
        return getattr(self.classifier, "num_classes", None) or getattr(self.vlm, "num_classes", None)
