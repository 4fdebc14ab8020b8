"""The course's ε slider: an image, its (amplified) perturbation, and the decisions of the classifier, the VLM
and Multi-Shield as the budget grows.

:func:`eps_explorer` shows an ipywidgets slider when a person is at a Jupyter front end, and otherwise (under
Papermill or nbconvert, in a script, without ipywidgets) one static figure with a row per ε. The choice:
``MSLIB_WIDGETS=1`` / ``0`` forces it; else the slider needs ipywidgets and a kernel started by a Jupyter
server (JupyterLab and Notebook set ``JPY_SESSION_NAME`` for their kernels; Papermill does not).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import nn

AttackFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


class Explorer:
    """What :func:`eps_explorer` showed: ``widget`` (interactive) or ``figure`` (static); displays nothing more."""

    def __init__(self, widget=None, figure=None) -> None:
        self.widget, self.figure = widget, figure

    @property
    def interactive(self) -> bool:
        return self.widget is not None

    def _ipython_display_(self) -> None:  # already shown by eps_explorer
        pass


def interactive_mode() -> bool:
    """Whether :func:`eps_explorer` shows a live slider (see the module docstring for the rule)."""
    forced = os.environ.get("MSLIB_WIDGETS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell" and "JPY_SESSION_NAME" in os.environ


class _Panel:
    """Adversarial images for one image at each ε (computed once, on demand) and the three decisions."""

    def __init__(self, x, y, class_names, attack: AttackFn, classifier: nn.Module, vlm: nn.Module | None,
                 shield: nn.Module | None) -> None:
        self.x, self.y, self.names = x, y, list(class_names)
        self.attack, self.classifier, self.vlm, self.shield = attack, classifier, vlm, shield
        self._cache: dict[tuple[int, float], torch.Tensor] = {}

    def adversarial(self, i: int, eps: float) -> torch.Tensor:
        key = (i, float(eps))
        if key not in self._cache:
            xi, yi = self.x[i:i + 1], self.y[i:i + 1]
            self._cache[key] = xi.clone() if eps <= 0 else self.attack(xi, yi, float(eps)).detach()
        return self._cache[key]

    def decisions(self, x_adv: torch.Tensor, i: int) -> list[tuple[str, str, bool]]:
        """(model, decision, correct-or-rejected) for each model given."""
        y = int(self.y[i])
        out = []
        with torch.no_grad():
            c = int(self.classifier(x_adv).argmax(1))
            out.append(("classifier", self.names[c], c == y))
            if self.vlm is not None:
                v = int(self.vlm(x_adv).argmax(1))
                out.append(("VLM", self.names[v], v == y))
            if self.shield is not None:
                m = int(self.shield.predict(x_adv)[0])
                rejected = m == len(self.names)
                out.append(("Multi-Shield", "REJECTED" if rejected else self.names[m], rejected or m == y))
        return out

    def draw(self, axes, i: int, eps: float, show_titles: bool = True) -> None:
        x, x_adv = self.x[i:i + 1], self.adversarial(i, eps)
        delta = (x_adv - x)[0]
        gray = x.shape[1] == 1
        img = lambda t: t[0].clamp(0, 1).cpu() if gray else t.permute(1, 2, 0).clamp(0, 1).cpu()  # noqa: E731
        scale = max(float(eps), 1e-12)
        axes[0].imshow(img(x[0]), cmap="gray", vmin=0, vmax=1)
        axes[1].imshow(img(delta / (2 * scale) + 0.5), cmap="gray" if gray else None, vmin=0, vmax=1)
        axes[2].imshow(img(x_adv[0]), cmap="gray", vmin=0, vmax=1)
        if show_titles:
            axes[0].set_title(f"clean: {self.names[int(self.y[i])]}", fontsize=9)
            axes[1].set_title("perturbation (amplified to ±ε)", fontsize=9)
        axes[2].set_title(f"adversarial, ε = {eps:g}", fontsize=9)
        lines = [f"{'✓' if ok else '✗'} {who}: {what}" for who, what, ok in self.decisions(x_adv, i)]
        axes[2].text(1.08, 0.5, "\n".join(lines), transform=axes[2].transAxes, va="center", fontsize=9,
                     family="monospace")
        for ax in axes:
            ax.set_xticks([]), ax.set_yticks([])


def eps_explorer(x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str], attack: AttackFn,
                 classifier: nn.Module, vlm: nn.Module | None = None, shield: nn.Module | None = None,
                 eps_values: Sequence[float] = (0.0, 0.02, 0.05, 0.1, 0.15), index: int = 0,
                 interactive: bool | None = None):
    """An ε slider over ``eps_values`` (and an image slider over ``x``) or, when not interactive, a static figure
    of image ``index`` with one row per ε. ``attack(x, y, eps)`` returns adversarial images for a batch.

    Each row shows the clean image, the perturbation amplified to the full grey range (mid-grey = no change,
    white = +ε, black = −ε), the adversarial image and each model's decision (✓ = correct, or rejected for
    Multi-Shield; ✗ = wrong). Shows it and returns an :class:`Explorer`.
    """
    import matplotlib.pyplot as plt

    panel = _Panel(x, y, class_names, attack, classifier, vlm, shield)
    eps_values = [float(e) for e in eps_values]
    if interactive is None:
        interactive = interactive_mode()
    if interactive:
        import ipywidgets as widgets
        from IPython.display import display

        def show(eps: float, image: int) -> None:
            fig, axes = plt.subplots(1, 3, figsize=(8, 2.6))
            panel.draw(axes, image, eps)
            fig.subplots_adjust(right=0.7)
            plt.show()

        ui = widgets.interactive(
            show,
            eps=widgets.SelectionSlider(options=eps_values, value=eps_values[min(len(eps_values) - 1, 3)],
                                        description="ε", continuous_update=False),
            image=widgets.IntSlider(value=index, min=0, max=len(y) - 1, description="image",
                                    continuous_update=False))
        display(ui)
        return Explorer(widget=ui)
    fig, axes = plt.subplots(len(eps_values), 3, figsize=(8, 2.3 * len(eps_values)), squeeze=False)
    for r, eps in enumerate(eps_values):
        panel.draw(axes[r], index, eps, show_titles=r == 0)
    fig.subplots_adjust(right=0.7, hspace=0.35)
    plt.show()
    return Explorer(figure=fig)


__all__ = ["Explorer", "eps_explorer", "interactive_mode"]
