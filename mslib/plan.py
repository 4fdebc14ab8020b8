"""The study as a plan: frozen :class:`Job` descriptions of cached results, built from a profile in one place.

A job names one result: its kind (``clean`` outputs, an ``attack``, ``zero-shot`` predictions), the
classifier, the target attacked (``clf``: the classifier alone, the non-adaptive attack; ``ms``:
Multi-Shield's K+1 logits, the adaptive attacks; ``vlm``: the VLM alone), the attack with its options, eps,
and its *context*: the evaluation samples (their indices) and the identity of every model involved (source,
spec, code version and checkpoint SHA-256s, see :func:`mslib.models.model_identity`). ``after`` lists the
jobs it builds on: a sample that Multi-Shield gets wrong without rejecting under one of them keeps that
example and is not attacked again. Two plans use that one mechanism:

* the eps chain of the adaptive attacks: the same attack at the next smaller eps (an example inside the
  smaller ball lies inside the larger one, and the model scored is the model attacked, so reuse is exact
  and the security curves are monotone). Transfer attacks (target ``clf``) are attacked fresh at every eps:
  an example that fooled the classifier at a smaller eps need not be the one that breaks Multi-Shield.
* the worst-case ensemble (AutoAttack's scheme): each extra attack runs only on the samples that every
  earlier stage left unbroken.

A job's key hashes its record (everything above, the keys of its ``after`` jobs, and the code version),
so a different checkpoint, sample or option is a different result. The plan is pure: it only needs the
profile and the identities, so the read-only store rebuilds exactly the executor's plan from its index.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .attacks import attack_spec
from .cache import canonical_json, record_key
from .profiles import Profile

# Bump when a change to the attacks or to the executor changes what a result holds.
CODE_VERSION = "mslib-results-4"  # 4: one decision rule (argmax of K+1), exact zero-gradient flag, skip of fixed points
# "conf": the confidence rejector (the classifier alone, rejecting below a confidence threshold matched to
# Multi-Shield's clean rejections on the same samples), a baseline that needs no VLM.
TARGETS = ("clf", "ms", "vlm", "conf")

# The paper's evaluation: APGD-CE and APGD-DLR on the classifier, transferred (non-adaptive), and the
# rejection-aware CE then DLR losses on Multi-Shield, DLR only on the points CE left unbroken (adaptive).
NONADAPTIVE = ("apgd-ce", "apgd-dlr")
PAPER_ADAPTIVE = ("apgd-ce-reject", "apgd-dlr-reject")

# The worst-case ensemble against Multi-Shield at the profile's eps, in the order the stages run. The first
# four are the paper's jobs above (each on every sample); each later stage attacks only what all earlier
# ones left unbroken, so its result already is the worst case so far.
ENSEMBLE: tuple[tuple[str, str], ...] = (
    ("clf", "apgd-ce"), ("clf", "apgd-dlr"),                # non-adaptive: transferred from the classifier
    ("ms", "apgd-ce-reject"), ("ms", "apgd-dlr-reject"),    # the paper's adaptive attacks
    ("ms", "apgd-dlr-reject-excl"),                         # DLR whose "best other" excludes y and reject
    ("vlm", "apgd-ce"), ("vlm", "apgd-dlr"),                # transferred from the VLM alone (DLR: scale-invariant)
    ("ms", "agreement"), ("ms", "agreement-selective"),     # both branches driven to one wrong class
    ("ms", "apgd-disagree"), ("ms", "apgd-detector"),       # the rejection-defense literature's objectives
    ("ms", "square-reject"),                                # gradient-free check for gradient masking
)
# The same worst-case scheme against the confidence rejector: the transferred attacks (the very jobs above,
# rescored under its rule), the paper's rejection-aware pair on its K+1 logits, the stronger DLR, the
# literature's objectives, then Square. The VLM and agreement attacks have nothing to aim at without a VLM.
BASELINE_ENSEMBLE: tuple[tuple[str, str], ...] = (
    ("clf", "apgd-ce"), ("clf", "apgd-dlr"),
    ("conf", "apgd-ce-reject"), ("conf", "apgd-dlr-reject"),
    ("conf", "apgd-dlr-reject-excl"),
    ("conf", "apgd-disagree"), ("conf", "apgd-detector"),
    ("conf", "square-reject"),
)
# The budget-convergence check (profiles with ``convergence``): after the whole ensemble, its strongest
# attacks again on what it left unbroken, with CONVERGENCE_SCALE x the iterations (and Square's queries) and
# CONVERGENCE_RESTARTS restarts for the gradient attacks. Each stage attacks only what every earlier one
# left unbroken, so the last stage's result is the worst case at the larger budget.
CONVERGENCE: dict[str, tuple[str, ...]] = {
    "ms": ("apgd-ce-reject", "apgd-dlr-reject-excl", "agreement-selective", "apgd-disagree", "apgd-detector",
           "square-reject"),
    "conf": ("apgd-ce-reject", "apgd-dlr-reject-excl", "apgd-disagree", "apgd-detector", "square-reject"),
}
CONVERGENCE_SCALE = 4
CONVERGENCE_RESTARTS = 5
TEXT_NORMS = ("standard", "original")


@dataclass(frozen=True)
class Job:
    """One cached result. ``context`` is the canonical JSON of the samples and model identities."""

    kind: str  # "clean" | "attack" | "zero-shot" | "rescore" (the examples of its one ``after`` job, rescored)
    dataset: str
    context: str
    classifier: str = ""
    target: str = ""
    attack: str = ""
    eps: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()
    tolerance: float | None = None
    after: tuple["Job", ...] = ()

    def record(self) -> dict[str, Any]:
        """The JSON-able record whose hash is the key (``after`` by key; an attack's own code version when it
        has been bumped past 1, so a change to one attack recomputes only the results that used it)."""
        rec = {"code": CODE_VERSION, "kind": self.kind, "dataset": self.dataset, "classifier": self.classifier,
               "target": self.target, "attack": self.attack, "eps": self.eps, "options": dict(self.options),
               "tolerance": self.tolerance, "after": [a.key for a in self.after],
               "context": json.loads(self.context)}
        if self.kind == "attack":
            version = attack_spec(self.attack).version
            if version != 1:
                rec["attack_version"] = version
        return rec

    @functools.cached_property
    def key(self) -> str:
        return record_key(self.record())

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    @property
    def defense(self) -> str:
        """The defense this job's result is scored against (and whose "broken" rule decides what it reuses
        from its ``after`` jobs): ``conf`` for attacks on the confidence rejector, else ``ms``."""
        return "conf" if self.target == "conf" else "ms"

    @property
    def whole(self) -> tuple["Job", ...]:
        """Results this job reads on every sample, whatever the shard: for an attack on the confidence rejector,
        the clean outputs its threshold is matched on (so every shard attacks at the same threshold)."""
        return (self.clean_job(),) if self.kind == "attack" and self.defense == "conf" else ()

    def clean_job(self) -> "Job":
        """The clean-outputs job of the same samples and models (the confidence rejector's threshold is
        matched to Multi-Shield's clean rejections there)."""
        return Job("clean", self.dataset, self.context, self.classifier)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``fashion_mnist/standard apgd-ce-reject@ms eps=0.1``."""
        if self.kind == "clean":
            return f"{self.dataset}/{self.classifier} clean outputs"
        if self.kind == "zero-shot":
            return f"{self.dataset} zero-shot {self.option('label')} ({self.option('text_norm')})"
        vlm = json.loads(self.context)["models"].get("vlm", {}).get("source", "")
        tag = f" [{vlm}]" if vlm and vlm not in ("lit", "open_clip", "hf-clip") else ""  # a variant's VLM
        what = f"{self.dataset}/{self.classifier or 'vlm'}{tag} {self.attack}@{self.target} eps={self.eps:g}"
        return what + (" (examples of another configuration, rescored)" if self.kind == "rescore" else "")


@dataclass(frozen=True)
class DatasetPlan:
    """Every job one (profile, dataset) needs, organized the way the tables read them."""

    profile: Profile
    clean: dict[str, Job]
    nonadaptive: dict[tuple[str, float], tuple[Job, ...]]  # (classifier, eps) -> APGD-CE, APGD-DLR on clf
    adaptive: dict[tuple[str, float], tuple[Job, ...]]  # (classifier, eps) -> the paper's CE, DLR on ms
    ensemble: dict[str, tuple[Job, ...]]  # classifier -> the ensemble's stages at profile.eps, in order
    zero_shot: tuple[Job, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # classifier -> the confidence rejector's worst-case stages at profile.eps (BASELINE_ENSEMBLE), in order
    baseline: dict[str, tuple[Job, ...]] = field(default_factory=dict)
    # APGD-CE on the VLM alone at profile.eps, every sample: the VLM's robust zero-shot accuracy
    vlm_attack: tuple[Job, ...] = ()
    # VLM variant name (profile.vlm_variants) -> the study at profile.eps with that VLM instead
    variants: dict[str, "DatasetPlan"] = field(default_factory=dict)
    # in a variant's plan, classifier -> "rescore" jobs: the examples of every attack of the profile's own
    # configuration on Multi-Shield, the VLM and the rejector, scored with this configuration's models (an
    # attack that broke the clean-VLM defense is a transfer attack on this one)
    transfer: dict[str, tuple[Job, ...]] = field(default_factory=dict)
    # profiles with ``convergence``: (classifier, defense "ms" | "conf") -> the stronger stages run after that
    # defense's ensemble on its survivors (CONVERGENCE), in order
    convergence: dict[tuple[str, str], tuple[Job, ...]] = field(default_factory=dict)

    @property
    def eps_half(self) -> float:
        """The eps of Tramer's check (a key of :attr:`nonadaptive`): half the profile's."""
        return half_eps(self.profile)

    def jobs(self) -> list[Job]:
        """Every job once, each after the jobs it builds on."""
        out: dict[str, Job] = {}

        def visit(job: Job) -> None:
            if job.key in out:
                return
            for a in job.after:
                visit(a)
            out[job.key] = job

        for group in (self.clean.values(), *self.nonadaptive.values(), *self.adaptive.values(),
                      *self.ensemble.values(), self.zero_shot, *self.baseline.values(), self.vlm_attack,
                      *self.transfer.values(), *self.convergence.values()):
            for job in group:
                visit(job)
        for variant in self.variants.values():
            for job in variant.jobs():
                visit(job)
        return list(out.values())


def study_eps(profile: Profile) -> list[float]:
    """Every positive eps the study attacks at: the grid and the profile's eps."""
    return sorted({e for e in profile.eps_grid if e > 0} | {profile.eps})


def half_eps(profile: Profile) -> float:
    """Tramer's check's budget: the classifier alone at half the profile's eps."""
    return profile.eps / 2


def nonadaptive_eps(profile: Profile) -> list[float]:
    """The study's eps values and eps/2 (for Tramer's check: the classifier alone at half the budget)."""
    return sorted(set(study_eps(profile)) | {half_eps(profile)})


def attack_options(profile: Profile, attack: str, compact: bool = True, stronger: bool = False
                   ) -> tuple[tuple[str, Any], ...]:
    """``run_attack`` keyword options of ``attack`` under ``profile`` (sorted pairs, part of the job's key):
    the attack's budget from its registered spec, the seed and batch compaction. ``stronger``: the
    convergence check's budget (CONVERGENCE_SCALE x iterations and queries, CONVERGENCE_RESTARTS restarts for
    the gradient attacks; Square keeps its restarts, its queries grow)."""
    spec = attack_spec(attack)
    opts: dict[str, Any] = {"seed": profile.seed, "compact": compact, **spec.budget(profile)}
    if stronger:
        for k in ("n_iter", "n_queries"):
            if k in opts:
                opts[k] *= CONVERGENCE_SCALE
        if not spec.gradient_free:
            opts["n_restarts"] = max(opts["n_restarts"], CONVERGENCE_RESTARTS)
    return tuple(sorted(opts.items()))


def vlm_variants(profile: Profile) -> dict[str, dict[str, Any]]:
    """The profile's extra VLMs (:attr:`Profile.vlm_variants`: name -> spec), each a configuration of the study
    with that VLM in Multi-Shield instead of the profile's own (e.g. an adversarially fine-tuned one)."""
    return profile.vlm_variants


def variant_profile(profile: Profile, name: str) -> Profile:
    """The profile with VLM variant ``name`` as its VLM (evaluated at profile.eps only, no variants; the
    convergence check only where :attr:`Profile.variant_convergence` asks for it)."""
    variants = vlm_variants(profile)
    if name not in variants:
        raise ValueError(f"profile {profile.name!r} has no VLM variant {name!r}; it has {sorted(variants)}")
    return profile.replace(vlm=name, vlm_spec=variants[name], eps_grid=(), vlm_variants={},
                           convergence=profile.convergence and profile.variant_convergence)


def results_family(profile: Profile) -> str:
    """The profile name results are keyed under: a profile that only adds configurations to another
    (:attr:`Profile.results_of`, e.g. tiny-plus = tiny + a robust VLM) shares that profile's results."""
    return profile.results_of or profile.name


def context(profile: Profile, indices: Iterable[int], models: dict[str, dict[str, Any]],
            speed: dict[str, Any] | None = None) -> str:
    """Canonical JSON of what, besides the attack, a result depends on: the samples and the models."""
    return canonical_json({"profile": results_family(profile), "dataset": profile.dataset, "data_options": profile.data_options,
                           "indices": [int(i) for i in indices], "models": models, "batch_size": profile.batch_size,
                           "device": str(profile.device).split(":")[0], **(speed or {})})


def dataset_plan(profile: Profile, indices: Iterable[int], identities: dict[str, dict[str, Any]],
                 speed: dict[str, Any] | None = None, compact: bool = True, ensemble: bool = True) -> DatasetPlan:
    """The plan of one (profile, dataset).

    ``identities``: model identity per classifier name, ``"vlm"`` and ``"vlm:<variant>"`` for each VLM
    variant of the profile (from the loaded models, or from the store's index); ``speed``: CUDA speed settings in effect (recorded); ``compact``: APGD batch compaction
    (an option of every attack job); ``ensemble=False`` leaves the worst-case ensemble out (benchmarks).
    """
    p, idx = profile, [int(i) for i in indices]
    vlm_id = identities["vlm"]
    ctx = {clf: context(p, idx, {"classifier": identities[clf], "vlm": vlm_id}, speed) for clf in p.classifiers}

    def attack_job(clf: str, target: str, attack: str, eps: float, after: tuple[Job, ...] = (),
                   stronger: bool = False) -> Job:
        return Job("attack", p.dataset, ctx[clf], clf, target, attack, float(eps),
                   attack_options(p, attack, compact, stronger), p.tolerance, after)

    clean = {clf: Job("clean", p.dataset, ctx[clf], clf) for clf in p.classifiers}
    nonadaptive = {(clf, e): tuple(attack_job(clf, "clf", a, e) for a in NONADAPTIVE)
                   for clf in p.classifiers for e in nonadaptive_eps(p)}
    adaptive: dict[tuple[str, float], tuple[Job, ...]] = {}
    for clf in p.classifiers:
        prev: tuple[Job, ...] | None = None
        for e in study_eps(p):
            ce = attack_job(clf, "ms", PAPER_ADAPTIVE[0], e, () if prev is None else (prev[0],))
            dlr = attack_job(clf, "ms", PAPER_ADAPTIVE[1], e, (ce,) if prev is None else (ce, prev[1]))
            adaptive[clf, e] = prev = (ce, dlr)
    stages: dict[str, tuple[Job, ...]] = {}
    if ensemble:
        for clf in p.classifiers:
            done: list[Job] = [*nonadaptive[clf, p.eps], *adaptive[clf, p.eps]]
            for target, attack in ENSEMBLE[len(done):]:
                done.append(attack_job(clf, target, attack, p.eps, tuple(done)))
            stages[clf] = tuple(done)
    zs_ctx = context(p, idx, {"vlm": vlm_id}, speed)
    prompts = [(t, (t,)) for t in p.templates] + [(f"ensemble of {len(p.templates)}", tuple(p.templates))]
    zero_shot = tuple(Job("zero-shot", p.dataset, zs_ctx, options=(("label", label), ("templates", templates),
                                                                   ("text_norm", norm)))
                      for label, templates in prompts for norm in TEXT_NORMS)
    baseline: dict[str, tuple[Job, ...]] = {}
    vlm_attack: tuple[Job, ...] = ()
    if ensemble:
        for clf in p.classifiers:
            done = list(nonadaptive[clf, p.eps])
            for target, attack in BASELINE_ENSEMBLE[len(done):]:
                # the paper's pair as on Multi-Shield (CE alone, DLR after CE), the later stages after all
                after = () if attack == PAPER_ADAPTIVE[0] else tuple(done[2:]) if attack == PAPER_ADAPTIVE[1] \
                    else tuple(done)
                done.append(attack_job(clf, target, attack, p.eps, after))
            baseline[clf] = tuple(done)
        vlm_attack = (Job("attack", p.dataset, zs_ctx, "", "vlm", "apgd-ce", float(p.eps),
                          attack_options(p, "apgd-ce", compact), p.tolerance),)
    convergence: dict[tuple[str, str], tuple[Job, ...]] = {}
    if ensemble and p.convergence:
        for clf in p.classifiers:
            for defense, base in (("ms", stages[clf]), ("conf", baseline[clf])):
                done = list(base)
                for attack in CONVERGENCE[defense]:
                    done.append(attack_job(clf, defense, attack, p.eps, tuple(done), stronger=True))
                convergence[clf, defense] = tuple(done[len(base):])
    variants = {}
    for name in vlm_variants(p):
        vid = identities.get(f"vlm:{name}")
        if vid is None:
            raise KeyError(f"no identity for VLM variant {name!r} (expected key 'vlm:{name}' in identities)")
        ids = {**{c: identities[c] for c in p.classifiers}, "vlm": vid}
        v = dataset_plan(variant_profile(p, name), idx, ids, speed, compact=compact, ensemble=ensemble)
        transfer = {clf: tuple(Job("rescore", p.dataset, v.clean[clf].context, clf, j.target, j.attack, j.eps,
                                   j.options, j.tolerance, (j,))
                               for j in (*stages.get(clf, ()), *baseline.get(clf, ())) if j.target != "clf")
                    for clf in p.classifiers}
        variants[name] = dataclasses.replace(v, transfer=transfer)
    return DatasetPlan(p, clean, nonadaptive, adaptive, stages, zero_shot, baseline=baseline,
                       vlm_attack=vlm_attack, variants=variants, convergence=convergence)


__all__ = ["BASELINE_ENSEMBLE", "CODE_VERSION", "CONVERGENCE", "DatasetPlan", "ENSEMBLE", "Job", "NONADAPTIVE",
           "PAPER_ADAPTIVE", "TARGETS", "attack_options", "context", "dataset_plan", "half_eps", "nonadaptive_eps",
           "results_family", "study_eps", "variant_profile", "vlm_variants"]
