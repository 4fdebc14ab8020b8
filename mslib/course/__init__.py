"""The course: six lesson notebooks on adversarial robustness and rejection defenses, built on mslib.

* :mod:`mslib.course.check` — the automatic checks of the exercises (``check.fgsm(fgsm, model, x, y, eps)``…).
* :mod:`mslib.course.reference` — the reference solutions the checks compare with.
* :mod:`mslib.course.widgets` — the ε slider (:func:`eps_explorer`), a static figure under Papermill.
* :mod:`mslib.course.build` — writes the student and solution notebooks from ``course/lessons/``
  (``make course``).

:func:`load_models` loads the profile's models for a lesson and says beforehand which ones must be trained
on this first run and about how long that takes; later runs read them from the cache.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from . import check, reference
from .widgets import eps_explorer, interactive_mode

# Rough seconds per training image and epoch on a busy 2-core CPU (the tiny recipes took 4.5, 17 and 60 min
# there while other jobs ran; about 10 min together on free cores), for the first-run announcement only.
_SECONDS_PER_IMAGE_EPOCH = {"standard": 1.5e-3, "fgsm-rs": 3.0e-3, "lit-layer": 2.0e-3}
_FULL_TRAIN_SPLIT = 60000  # Fashion-MNIST's training split, when a spec trains on all of it


def _training_estimate(kind: str, spec: dict[str, Any]) -> float:
    n = int(spec.get("train_subset") or _FULL_TRAIN_SPLIT) * int(spec.get("epochs", 1))
    if kind == "cnn":
        return n * _SECONDS_PER_IMAGE_EPOCH.get(spec.get("recipe"), 2.4e-3)
    return n * _SECONDS_PER_IMAGE_EPOCH["lit-layer"] * int(spec.get("layers", 4))


def untrained(profile: Any, classifiers=(), vlm: bool = False) -> list[tuple[str, float]]:
    """(model, estimated seconds) for each of the named local models that is not in the cache yet."""
    from ..models.local import train_info
    from ..profiles import get_profile

    p = get_profile(profile)
    todo = []
    for name in classifiers:
        spec = p.classifier_specs[name]
        if spec.get("source") == "local-cnn" and train_info("cnn", p, spec) is None:
            todo.append((f"classifier '{name}'", _training_estimate("cnn", spec)))
    if vlm and p.vlm_spec.get("source") == "lit" and train_info("lit", p, p.vlm_spec) is None:
        todo.append((f"vision-language model '{p.vlm}'", _training_estimate("lit", p.vlm_spec)))
    return todo


def load_models(profile: Any, classifiers=(), vlm: bool = False) -> tuple[nn.Module, ...]:
    """The named classifiers (then the VLM if ``vlm``) of ``profile``, announcing any first-run training."""
    import mslib

    p = mslib.get_profile(profile)
    todo = untrained(p, classifiers, vlm)
    if todo:
        total = sum(s for _, s in todo)
        names = ", ".join(f"{m} (~{max(1, round(s / 60))} min)" for m, s in todo)
        print(f"First run on profile '{p.name}': training {names} — up to about {max(1, round(total / 60))} min on a "
              "busy 2-core CPU (less on free cores), once; later runs load them from the cache.", flush=True)
    else:
        print(f"Profile '{p.name}': every model this lesson needs is cached (nothing to train).")
    models = [mslib.load_classifier(p, name) for name in classifiers]
    if vlm:
        models.append(mslib.load_vlm(p))
    return tuple(models)


__all__ = ["check", "eps_explorer", "interactive_mode", "load_models", "reference", "untrained"]
