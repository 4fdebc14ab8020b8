"""The executor: runs a plan's jobs (see :mod:`mslib.plan`) batch by batch into the results cache.

``run_study(profile)`` loads the profile's evaluation sets and models, builds the plan, runs every job that
is not complete yet and, when all are, writes the store's index (``data/results/plans/<profile>.json``,
read by :mod:`mslib.store`). One batch loop serves every job: clean outputs, zero-shot predictions and
attacks; an attack first takes, from the jobs in its ``after``, the samples they broke (Multi-Shield wrong
and not rejecting) and attacks the rest.

Each result lives in ``data/results/<key>/`` (``record.json`` says what produced it) as two files per batch,
``batch_<start>.pt`` (classifier logits ``f``, VLM similarities ``s``, success, bookkeeping) and
``batch_<start>.x.pt`` (the adversarial images, read only when asked for), each written atomically behind a
checksum. A batch counts as done only when both verify; a damaged one is reported and recomputed. A killed
run loses at most the batch in flight. ``shard=(i, n)`` runs batches i, i+n, ... of every job; random starts
are keyed by sample index, so shards merge into exactly the unsharded result.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .attacks import attack_spec, frozen, run_attack
from .cache import canonical_json, data_root, write_json_if_changed
from .defense import ConfidenceRejector, MultiShield, confidence_decide, decide, matched_threshold
from .metrics import broken
from .plan import TARGETS, DatasetPlan, Job, dataset_plan, variant_profile, vlm_variants
from .profiles import Profile, get_profile
from .results import ResultFolder
from .runtime import ScaledLogits, prepare_model, speed_settings


def _require_assets(*profiles: Profile) -> None:
    """The assets of these per-dataset profiles (the run's overrides applied, e.g. fewer classifiers)."""
    try:
        from .fetch import require_assets
    except ImportError:  # the paper-asset checker is optional for the offline profiles
        return
    require_assets(profiles[0].name, list(profiles))


def job_broken(job: Job, f: torch.Tensor, s: torch.Tensor, y: torch.Tensor, threshold: float | None = None
               ) -> torch.Tensor:
    """Per sample: the defense ``job`` is scored against (:attr:`Job.defense`) is broken by outputs f, s."""
    pred = confidence_decide(f, threshold) if job.defense == "conf" else decide(f, s, job.tolerance)
    return broken(pred, y, f.shape[1])


class Workspace:
    """One (profile, dataset): its evaluation set and, loaded on first use, its models. Model identities
    come from the checkpoint files when a locator finds them, so a study that is done loads no model."""

    def __init__(self, profile: Profile) -> None:
        from .data import load_eval_set

        _require_assets(profile)
        self.profile = profile
        self.images, self.labels, self.class_names, self.indices = load_eval_set(profile, with_indices=True)
        self._models: dict[str, nn.Module] = {}
        self._identities: dict[str, dict[str, Any]] = {}
        self._thresholds: dict[str, float] = {}
        self._zero_shot: dict[tuple, nn.Module] = {}  # (templates, text_norm) -> zero-shot classifier
        self._base: tuple[Workspace, str] | None = None  # a VLM variant's: (its base workspace, "vlm:<name>")

    def _delegate(self, name: str) -> tuple["Workspace", str]:
        """Where a model of this workspace lives: a variant shares its base's models (not reloaded)."""
        if self._base is None:
            return self, name
        base, vlm = self._base
        return base, (vlm if name == "vlm" else name)

    def identity(self, name: str) -> dict[str, Any]:
        """The identity of model ``name`` (see :meth:`model`), from its checkpoint files when they are there
        (each hashed once per workspace), else from the loaded model."""
        owner, name = self._delegate(name)
        if owner is not self:
            return owner.identity(name)
        if name not in self._identities:
            from .models import classifier_identity, vlm_identity

            if name in self._models:
                found = self._models[name].identity
            else:
                profile, is_vlm = self._source(name)
                found = vlm_identity(profile) if is_vlm else classifier_identity(profile, name)
            self._identities[name] = found if found is not None else self.model(name).identity
        return self._identities[name]

    def _source(self, name: str) -> tuple[Profile, bool]:
        """The profile that holds model ``name`` and whether it is a VLM (``"vlm"``, ``"vlm:<variant>"``)."""
        if name == "vlm":
            return self.profile, True
        if name.startswith("vlm:"):
            return variant_profile(self.profile, name[4:]), True
        return self.profile, False

    def model(self, name: str) -> nn.Module:
        """A classifier by name, ``"vlm"`` or ``"vlm:<variant>"``; loaded (trained on first use) outside
        inference mode."""
        owner, name = self._delegate(name)
        if owner is not self:
            return owner.model(name)
        if name not in self._models:
            from .models import load_classifier, load_vlm

            profile, is_vlm = self._source(name)
            raw = load_vlm(profile) if is_vlm else load_classifier(profile, name)
            model = prepare_model(raw, self.profile)
            model.identity = raw.identity
            self._models[name] = model
        return self._models[name]

    def identities(self) -> dict[str, dict[str, Any]]:
        names = (*self.profile.classifiers, "vlm", *(f"vlm:{v}" for v in vlm_variants(self.profile)))
        return {name: self.identity(name) for name in names}

    def plan(self, compact: bool = True, ensemble: bool = True) -> DatasetPlan:
        return dataset_plan(self.profile, self.indices.tolist(), self.identities(), speed_settings(self.profile),
                            compact=compact, ensemble=ensemble)

    def variant(self, name: str) -> "Workspace":
        """The same samples and classifiers with VLM variant ``name`` as the VLM (models shared, not reloaded)."""
        ws = Workspace.__new__(Workspace)
        ws.profile = variant_profile(self.profile, name)
        ws.images, ws.labels, ws.class_names, ws.indices = self.images, self.labels, self.class_names, self.indices
        ws._models, ws._identities, ws._thresholds, ws._zero_shot = {}, {}, {}, {}
        ws._base = (self, f"vlm:{name}")
        return ws

    def target_model(self, clf: str, target: str, threshold: float | None = None) -> nn.Module:
        if target == "clf":
            return self.model(clf)
        if target == "ms":
            return MultiShield(self.model(clf), self.model("vlm"), tolerance=self.profile.tolerance)
        if target == "vlm":
            return ScaledLogits(self.model("vlm"))
        if target == "conf":
            return ConfidenceRejector(self.model(clf), threshold)
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")

    def evaluate(self, clf: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier logits and VLM similarities of ``x`` (for the VLM alone, ``clf=""``: f is s)."""
        vlm = self.model("vlm")
        with torch.inference_mode():
            x = x.to(self.profile.device)
            s = vlm(x).float().cpu()
            return (self.model(clf)(x).float().cpu() if clf else s.clone()), s

    def threshold(self, job: Job) -> float | None:
        """The confidence rejector's threshold for an attack on it: matched to Multi-Shield's clean rejections
        on the job's samples, from the stored clean outputs (:attr:`Job.whole`: :func:`execute` completes them
        first, whatever the shard), as :meth:`mslib.store.Store.threshold` reads it back; computed once per
        workspace. None for other defenses."""
        if job.defense != "conf":
            return None
        (clean,) = job.whole
        if clean.key not in self._thresholds:
            clean_out = ResultFolder.of(clean).concat(("f", "s"))
            self._thresholds[clean.key] = matched_threshold(clean_out["f"], clean_out["s"], job.tolerance)
        return self._thresholds[clean.key]


@dataclass
class Summary:
    """What a run did, in batches: computed anew, reused from the cache, recomputed after damage, left to
    other shards; and the jobs complete out of all."""

    jobs: int = 0
    complete: int = 0
    computed: int = 0
    reused: int = 0
    recomputed: int = 0
    pending: int = 0
    damaged: list[str] = field(default_factory=list)
    index: Path | None = None

    @property
    def done(self) -> bool:
        return self.jobs > 0 and self.complete == self.jobs

    def line(self, profile: str, seconds: float) -> str:
        where = f"index {self.index}" if self.index else f"results under {data_root() / 'results'}"
        state = "complete" if self.done else f"{self.complete}/{self.jobs} jobs complete (other shards pending)"
        return (f"{state}: profile {profile}, {self.jobs} jobs; batches {self.computed} computed, {self.reused} "
                f"reused, {self.recomputed} recomputed after damage; {where} ({seconds:.0f} s)")


def _evaluate_zero_shot(ws: Workspace, job: Job, x: torch.Tensor) -> torch.Tensor:
    # the text embeddings depend only on the prompts, not on the batch: encode them once per workspace
    key = (tuple(job.option("templates")), job.option("text_norm"))
    with torch.inference_mode():
        if key not in ws._zero_shot:
            ws._zero_shot[key] = ws.model("vlm").with_prompts(ws.class_names, key[0], text_norm=key[1])
        return ws._zero_shot[key](x.to(ws.profile.device)).float().cpu()


def _attack_batch(ws: Workspace, job: Job, model: nn.Module, start: int) -> dict[str, Any]:
    """One batch of an attack job: reuse what its ``after`` jobs broke, attack the rest, score both models."""
    p = ws.profile
    sl = slice(start, start + p.batch_size)
    x, y = ws.images[sl], ws.labels[sl]
    t0 = time.perf_counter()
    x_adv = x.clone()
    reused = torch.zeros(x.shape[0], dtype=torch.bool)
    zero_grad = torch.full((x.shape[0],), -1, dtype=torch.int8)
    threshold = ws.threshold(job)
    f = s = None
    for a in job.after:  # earlier results of this batch: the first one that broke a sample provides it
        earlier = ResultFolder.of(a)
        prev = earlier.read(start)
        if f is None:
            f, s = prev["f"].clone(), prev["s"].clone()
        new = job_broken(job, prev["f"], prev["s"], y, threshold) & ~reused
        if new.any():
            x_adv[new] = earlier.read_images(start)[new]
            f[new], s[new] = prev["f"][new], prev["s"][new]
            reused |= new
    todo = (~reused).nonzero().squeeze(1)
    success = reused.clone()
    steps = job.option(attack_spec(job.attack).steps_option, 0)
    curve, loss_curve, n_fwd = [int(reused.sum())] * (steps + 1), [0.0] * (steps + 1), 0
    if todo.numel():
        opts = dict(job.options)
        res = run_attack(model, x[todo], y[todo], job.attack, job.eps, batch_size=p.batch_size,
                         indices=ws.indices[sl][todo], **opts)
        x_adv[todo] = res.x_adv
        success[todo] = res.success
        if res.zero_grad is not None:
            zero_grad[todo] = res.zero_grad
        # the attack's own successes (for a transfer: its source model fooled) on top of the samples reused
        curve = [int(reused.sum()) + c for c in res.success_curve]
        loss_curve = [v * todo.numel() / x.shape[0] for v in res.loss_curve]
        n_fwd = res.n_forward
        f_new, s_new = ws.evaluate(job.classifier, x_adv[todo])
        if f is None:
            f, s = f_new, s_new
        else:
            f[todo], s[todo] = f_new, s_new
    out = {"x": x_adv, "f": f, "s": s, "success": success, "reused": reused, "zero_grad": zero_grad,
           "success_curve": torch.tensor(curve), "loss_curve": torch.tensor(loss_curve), "n_forward": n_fwd,
           "seconds": time.perf_counter() - t0}
    if threshold is not None:
        out["threshold"] = torch.tensor(threshold, dtype=torch.float64)
    return out


def _compute_batch(ws: Workspace, job: Job, model: nn.Module | None, start: int) -> dict[str, Any]:
    x = ws.images[start:start + ws.profile.batch_size]
    if job.kind == "clean":
        f, s = ws.evaluate(job.classifier, x)
        return {"x": x.clone(), "f": f, "s": s}
    if job.kind == "zero-shot":
        return {"x": x[:0].clone(), "s": _evaluate_zero_shot(ws, job, x)}
    if job.kind == "rescore":  # another configuration's examples, scored with this workspace's models
        (source,) = job.after
        x_src = ResultFolder.of(source).read_images(start)
        f, s = ws.evaluate(job.classifier, x_src)
        return {"x": x_src[:0].clone(), "f": f, "s": s}  # the images stay with the job that made them
    return _attack_batch(ws, job, model, start)


def _check_job(job: Job) -> None:
    if job.kind != "attack":
        return
    spec = attack_spec(job.attack)  # an unknown name fails with the registered ones
    if job.target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {job.target!r}")
    if spec.reject_aware and job.target not in ("ms", "conf"):
        raise ValueError(f"{job.attack} needs a rejecting model: use target='ms' or 'conf'")


def _check_models(ws: Workspace, job: Job, loaded: bool = False) -> None:
    """A job runs only in a workspace holding the very models its key names (a base configuration's job in
    a VLM variant's workspace would store the variant's outputs under the base key); checked from the
    identities (no model loaded), and with ``loaded`` against the loaded models themselves."""
    for role, identity in json.loads(job.context)["models"].items():
        name = job.classifier if role == "classifier" else role
        have = ws.model(name).identity if loaded else ws.identity(name)
        if json.loads(canonical_json(have)) != identity:
            raise ValueError(f"{job.label}: this workspace's {role} is not the model the job's key names "
                             f"(running it here would store another model's outputs under its key)")


def execute(ws: Workspace, jobs: Iterable[Job], shard: tuple[int, int] | None = None, progress: bool = True,
            summary: Summary | None = None) -> Summary:
    """Run ``jobs`` (each after the jobs in its ``after``) on this shard's batches; return what was done."""
    summary = summary or Summary()
    for job in jobs:
        _check_job(job)
        _check_models(ws, job)
        folder = ResultFolder.of(job)
        folder.write_record()
        every = folder.starts()
        states = {b: folder.state(b) for b in every}
        mine = folder.starts(shard)
        todo = [b for b in mine if states[b] != "done"]
        summary.jobs += 1
        summary.reused += len(mine) - len(todo)
        summary.damaged += [str(folder.files(b)[0]) for b in todo if states[b] == "damaged"]
        summary.recomputed += sum(states[b] == "damaged" for b in todo)
        summary.computed += sum(states[b] != "damaged" for b in todo)
        summary.pending += sum(states[b] != "done" for b in every if b not in mine)
        if not any(states[b] != "done" for b in every if b not in mine):
            summary.complete += 1
        if not todo:
            continue
        if job.whole:  # results this job reads whole (e.g. for a threshold): every batch, whatever the shard
            execute(ws, job.whole, progress=False)
        _check_models(ws, job, loaded=True)  # loads the job's models: only for a job with work to do
        model = ws.target_model(job.classifier, job.target, ws.threshold(job)) if job.kind == "attack" else None
        bar: Iterable[int] = todo
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(todo, desc=job.label, unit="batch", leave=False)
        with frozen(model) if model is not None else contextlib.nullcontext():
            for b in bar:
                folder.write(b, _compute_batch(ws, job, model, b))
    return summary


# ---- the study ----------------------------------------------------------------------------------------
def index_path(profile_name: str) -> Path:
    """The store's index of a profile: which plan ran, with which models, on which samples."""
    return data_root() / "results" / "plans" / f"{profile_name}.json"


def _json_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted((overrides or {}).items())}


def study_index(profile_name: str, overrides: dict[str, Any] | None, compact: bool,
                workspaces: list[Workspace], plans: list[DatasetPlan]) -> dict[str, Any]:
    """What the store needs to rebuild the plan and read it: profile, overrides, samples, model identities."""
    return {
        "profile": profile_name, "overrides": _json_overrides(overrides), "compact": compact,
        "datasets": {ws.profile.dataset: {"indices": ws.indices.tolist(), "labels": ws.labels.tolist(),
                                          "class_names": list(ws.class_names), "models": ws.identities(),
                                          "speed": speed_settings(ws.profile)}
                     for ws in workspaces},
        "jobs": sorted(j.key for plan in plans for j in plan.jobs()),
    }


def study_profiles(profile_name: str, overrides: dict[str, Any] | None = None) -> list[Profile]:
    """The per-dataset profiles a study runs: the profile's datasets, or the ``datasets`` override's."""
    datasets = (overrides or {}).get("datasets") or get_profile(profile_name).datasets
    return [get_profile(profile_name, ds, **(overrides or {})) for ds in datasets]


def run_study(profile_name: str, shard: tuple[int, int] | None = None, progress: bool = True,
              overrides: dict[str, Any] | None = None, compact: bool = True, ensemble: bool = True) -> Summary:
    """Compute (or resume) every result of the profile's study; returns a :class:`Summary` (``.done``).

    ``overrides`` replace profile fields for every dataset (e.g. ``{"n_samples": 20}`` for a quick run;
    ``datasets`` runs only those of the profile's datasets);
    ``compact=False`` runs the attacks without batch compaction and ``ensemble=False`` without the
    worst-case ensemble (for benchmarks). When every job is complete the store's index is written (only if
    it changed), so notebooks read exactly this plan.
    """
    summary = Summary()
    workspaces, plans = [], []
    profiles = study_profiles(profile_name, overrides)
    _require_assets(*profiles)  # every dataset's, before any computation (not hours later, at the next one)
    for p in profiles:
        ws = Workspace(p)
        plan = ws.plan(compact=compact, ensemble=ensemble)
        jobs = plan.jobs()
        if progress:
            print(f"{profile_name}/{p.dataset}: {len(jobs)} jobs", file=sys.stderr, flush=True)
        own = dataclasses.replace(plan, variants={}).jobs()  # with the profile's VLM
        execute(ws, own, shard=shard, progress=progress, summary=summary)
        own_keys = {j.key for j in own}
        for name, vplan in plan.variants.items():  # each VLM variant: the same samples, another VLM
            execute(ws.variant(name), [j for j in vplan.jobs() if j.key not in own_keys], shard=shard,
                    progress=progress, summary=summary)
        workspaces.append(ws)
        plans.append(plan)
    if summary.done:
        summary.index = write_index(profile_name, overrides, compact, workspaces, plans, ensemble)
    return summary


def write_index(profile_name: str, overrides: dict[str, Any] | None, compact: bool, workspaces: list[Workspace],
                plans: list[DatasetPlan], ensemble: bool = True) -> Path:
    """Write the store's index of a complete study (only if it changed, so Make sees no new file)."""
    index = study_index(profile_name, overrides, compact, workspaces, plans)
    return write_json_if_changed({**index, "ensemble": ensemble}, index_path(profile_name))


# ---- command line -------------------------------------------------------------------------------------
def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` → (i, n) with 0 <= i < n."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


_BARE_WORD = re.compile(r"[A-Za-z_][\w.:/-]*")  # device=cpu, sampler=original: taken as a string


_NOT_SETTABLE = {"name": "the profile is chosen with --profile, not overridden",
                 "dataset": "a study runs each of the profile's datasets; choose them with --set datasets=(...)"}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["n_samples=4", "device=cpu", "classifiers=('Standard',)"]`` → profile overrides (Python literals or
    strings; lists become tuples)."""
    known = {f.name for f in fields(Profile)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {item!r}")
        if key in _NOT_SETTABLE:  # the profile's identity, not a value of it
            raise ValueError(f"--set {key}: {_NOT_SETTABLE[key]}")
        if key not in known:
            raise ValueError(f"--set: unknown profile field {key!r}; known: {sorted(known - set(_NOT_SETTABLE))}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if not _BARE_WORD.fullmatch(text):  # meant as a literal but malformed: never a silent string
                raise ValueError(f"--set {key}: {text!r} is neither a Python literal nor a bare word "
                                 f"(quote strings inside tuples and dicts, e.g. ('a','b'))") from None
            value = text
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compute the cached results of a profile's study.")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--shard", default=None, help="i/n: run only shard i of n (merge by running all shards)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a profile field for every dataset, e.g. --set n_samples=8 (repeatable)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        summary = run_study(args.profile, parse_shard(args.shard), overrides=parse_overrides(args.set))
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:  # bad input or missing data: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.line(args.profile, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
