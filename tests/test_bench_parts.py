"""The benchmark's timer of the chain's parts: it leaves the attack's bytes alone and puts everything back."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import vs_original  # noqa: E402


def test_timing_the_parts_changes_no_byte_and_restores_the_models_and_autograd(smoke_models):
    """Catches a timer that hands autograd other arguments (x_adv moves), counts the VLM's backward pass as the
    classifier's (its time stays 0 where the chain ran it), or leaves its wrappers in place after an error."""
    from mslib.data import load_eval_set
    from mslib.models import load_classifier, load_vlm

    p = smoke_models
    x, y, _ = load_eval_set(p)
    x, y = x[:12], y[:12]
    clf, vlm = load_classifier(p, p.classifiers[0]).eval(), load_vlm(p).eval()
    for m in (clf, vlm):
        m.requires_grad_(False)
    args = (clf, vlm, x, y, 0.1, 3, 12, p.tolerance, p.seed)
    plain, _ = vs_original.mslib_chain(*args, skip=False)
    with vs_original.timed_parts(clf, vlm) as t:
        timed, _ = vs_original.mslib_chain(*args, skip=False)
    assert torch.equal(timed, plain)
    # without the skips every step runs the VLM's backward pass, so each part took time
    assert min(t[k] for k in ("classifier_forward", "vlm_forward", "classifier_backward", "vlm_backward")) > 0
    real_grad = torch.autograd.grad
    with pytest.raises(RuntimeError, match="inside"):
        with vs_original.timed_parts(clf, vlm):
            assert torch.autograd.grad is not real_grad and "forward" in vars(vlm)
            raise RuntimeError("inside")
    assert torch.autograd.grad is real_grad
    assert "forward" not in vars(clf) and "forward" not in vars(vlm)  # the classes' methods again
