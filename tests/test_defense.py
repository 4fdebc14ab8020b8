"""The Multi-Shield rejection rule on hand-built outputs, and gradients through both branches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mslib import MultiShield, ZeroShotClassifier, decide, rejection_logits
from mslib.models import ImagePreprocess


class Fixed(nn.Module):
    """Returns a fixed output per sample regardless of the input (for hand-built cases)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", out)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.out[: x.shape[0]] + 0 * x.sum()


F = torch.tensor([
    [3.0, 1.0, 0.0],   # classifier says 0
    [3.0, 1.0, 0.0],   # classifier says 0
    [2.0, 2.0, 0.0],   # tie: argmax takes the first maximum, 0
    [0.0, 5.0, 1.0],   # classifier says 1
    [0.0, 5.0, 1.0],   # classifier says 1
])
S = torch.tensor([
    [0.30, 0.20, 0.10],     # VLM agrees (best = 0): gap 0 -> accept 0
    [0.10, 0.30, 0.20],     # VLM prefers 1 by 0.2 -> reject
    [0.25, 0.25, 0.10],     # tie in VLM too: gap 0 -> accept 0
    [0.3000, 0.2995, 0.0],  # gap 0.0005 <= tolerance 1e-3 -> accept 1
    [0.3000, 0.2980, 0.0],  # gap 0.0020 > tolerance -> reject
])


def test_rejection_logits_and_predictions_by_hand():
    tol = 1e-3
    z = rejection_logits(F, S, tol)
    assert z.shape == (5, 4)
    assert torch.equal(z[:, :3], F)
    gaps = torch.tensor([0.0, 0.2, 0.0, 0.0005, 0.002])
    expected_r = F.max(dim=1).values + gaps - tol
    assert torch.allclose(z[:, 3], expected_r, atol=1e-6)
    assert decide(F, S, tol).tolist() == [0, 3, 0, 1, 3]
    assert z.argmax(dim=1).tolist() == [0, 3, 0, 1, 3]


def test_tolerance_boundary_moves_the_decision():
    f = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[0.20, 0.25]])  # classifier says 0, VLM prefers 1 by 0.05
    assert decide(f, s, 0.049).item() == 2
    assert decide(f, s, 0.051).item() == 0
    assert decide(f, s, 0.0).item() == 2


def test_multishield_runs_each_branch_once_and_matches_rule():
    clf, vlm = Fixed(F), Fixed(S)
    ms = MultiShield(clf, vlm, tolerance=1e-3)
    x = torch.rand(5, 1, 4, 4)
    z = ms(x)
    assert clf.calls == 1 and vlm.calls == 1
    assert z.shape == (5, 4)
    assert ms.predict(x).tolist() == [0, 3, 0, 1, 3]


def test_class_count_mismatch_is_a_clear_error():
    ms = MultiShield(Fixed(F), Fixed(S[:, :2]))
    with pytest.raises(ValueError, match="same classes"):
        ms(torch.rand(5, 1, 4, 4))

    class K(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.num_classes = k

    with pytest.raises(ValueError, match="classes"):
        MultiShield(K(10), K(5))
    with pytest.raises(ValueError, match="tolerance"):
        MultiShield(K(3), K(3), tolerance=-1)


def test_gradients_flow_from_rejection_score_through_both_branches():
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    vlm = ZeroShotClassifier(encoder, torch.randn(4, 6), ImagePreprocess(8, [0.5] * 3, [0.25] * 3))
    ms = MultiShield(clf, vlm, tolerance=0.0)
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    ms(x)[:, -1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert clf[1].weight.grad.abs().sum() > 0          # classifier branch (max_k f_k)
    assert encoder[1].weight.grad.abs().sum() > 0      # VLM branch (similarity gap)


def test_zero_shot_classifier_resizes_and_returns_cosines():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    text = torch.randn(4, 5)
    zs = ZeroShotClassifier(encoder, text, ImagePreprocess(8, [0.5] * 3, [0.25] * 3))
    x = torch.rand(2, 1, 28, 28)
    s = zs(x)
    assert s.shape == (2, 4)
    assert s.abs().max() <= 1 + 1e-6
    img = torch.nn.functional.normalize(encoder(zs.preprocess(x)), dim=-1)
    assert torch.allclose(s, img @ torch.nn.functional.normalize(text, dim=-1).t(), atol=1e-6)
    # any input size works, batched
    assert zs(torch.rand(3, 3, 40, 30)).shape == (3, 4)
