"""The results layer: results keyed by the models that made them, damaged files never used, tables that
only read, and kill -9 at any point changes nothing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mslib import tables
from mslib.cache import DamagedFileError, data_root_at, load_tensors, read_json, save_tensors
from mslib.defense import decide
from mslib.experiment import run_study
from mslib.metrics import broken
from mslib.plan import dataset_plan
from mslib.store import ResultsNotReadyError, Store

from results_helpers import OVERRIDES, fresh_cache, kill_during_training, linked_models_but, study_copy

TABLES = ("main_table", "attacks_table", "security_curves", "tolerance_tradeoff", "eps_half_check",
          "zero_shot_table")


def _tables(cache: Path) -> dict[str, str]:
    with data_root_at(cache):
        return {name: getattr(tables, name)("smoke").to_csv(index=False) for name in TABLES}


def _copy_results(src: Path, dst: Path) -> None:
    shutil.copytree(src / "results", dst / "results")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, smoke_study):
    cache = study_copy(smoke_study, tmp_path_factory.mktemp("results") / "clean")  # computed once per session
    with data_root_at(cache):
        store = Store("smoke")
    return cache, _tables(cache), store


def _run(cache: Path):
    with data_root_at(cache):
        return run_study("smoke", progress=False, overrides=OVERRIDES)


def test_a_rerun_with_nothing_changed_computes_nothing(clean_run):
    cache, before, store = clean_run
    summary = _run(cache)
    n_jobs = len(store.datasets[0].plan.jobs())
    assert (summary.jobs, summary.computed, summary.recomputed, summary.reused) == (n_jobs, 0, 0, 2 * n_jobs)
    assert _tables(cache) == before


def test_another_checkpoint_in_place_recomputes_exactly_the_results_that_used_it(clean_run, tmp_path):
    from mslib.models.local import model_dir

    src, before, store = clean_run
    cache = fresh_cache(tmp_path / "swap", copy_models=True)
    _copy_results(src, cache)
    plan = store.datasets[0].plan
    p = plan.profile
    with data_root_at(cache):
        ckpt = {c: model_dir("cnn", p, p.classifier_specs[c]) / "model.pt" for c in p.classifiers}
    shutil.copyfile(ckpt["standard"], ckpt["fgsm-rs"])  # a valid checkpoint, but another model's
    summary = _run(cache)
    used = [j for j in plan.jobs() if j.classifier == "fgsm-rs"]
    others = [j for j in plan.jobs() if j.classifier != "fgsm-rs"]
    assert used and others
    assert summary.computed == 2 * len(used) and summary.reused == 2 * len(others) and summary.recomputed == 0
    # the fgsm-rs rows now come from the standard CNN's weights: with per-sample seeded attacks they equal
    # the standard rows exactly, and differ from the rows of the real fgsm-rs model
    with data_root_at(cache):
        new = tables.main_table("smoke").set_index("classifier")
    with data_root_at(src):
        old = tables.main_table("smoke").set_index("classifier")
    assert new.loc["fgsm-rs"].equals(new.loc["standard"])
    assert new.loc["standard"].equals(old.loc["standard"])
    assert not new.loc["fgsm-rs"].equals(old.loc["fgsm-rs"])


def test_a_model_code_version_is_part_of_every_key_that_used_the_model(clean_run):
    _, _, store = clean_run
    d = store.datasets[0]
    entry = store.index["datasets"][d.profile.dataset]
    base = {j.key for j in d.plan.jobs()}

    def keys(bump: str) -> tuple[set[str], set[str]]:
        ids = {k: dict(v) for k, v in entry["models"].items()}
        ids[bump]["code"] = f"{ids[bump]['code']}-bumped"
        plan = dataset_plan(d.profile, entry["indices"], ids, entry["speed"])
        uses = {j.key for j in plan.jobs() if bump == "vlm" or j.classifier == bump}
        return uses, {j.key for j in plan.jobs()} - uses

    changed, same = keys("fgsm-rs")
    assert changed and not changed & base  # every job of the bumped model has a new key ...
    assert same and same <= base  # ... and every other job keeps its key
    changed, same = keys("vlm")  # every result depends on the VLM
    assert not same and not changed & base


def test_damaged_batch_files_and_checkpoints_are_named_recomputed_and_the_tables_are_unchanged(
        clean_run, tmp_path, capfd):
    from mslib.models.local import model_dir

    src, before, store = clean_run
    cache = fresh_cache(tmp_path / "damaged", copy_models=True)
    _copy_results(src, cache)
    plan = store.datasets[0].plan
    p = plan.profile
    targets = [plan.adaptive["standard", p.eps][1], plan.nonadaptive["fgsm-rs", p.eps][0],
               plan.ensemble["standard"][-1]]
    truncated = cache / "results" / targets[0].key / "batch_0000005.pt"
    zeroed = cache / "results" / targets[1].key / "batch_0000000.x.pt"
    garbled = cache / "results" / targets[2].key / "batch_0000000.pt"
    truncated.write_bytes(truncated.read_bytes()[:200])
    zeroed.write_bytes(bytes(zeroed.stat().st_size))
    data = bytearray(garbled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    garbled.write_bytes(bytes(data))
    with data_root_at(cache):
        ckpt = model_dir("cnn", p, p.classifier_specs["standard"]) / "model.pt"
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 64] = os.urandom(64)
    ckpt.write_bytes(bytes(raw))
    capfd.readouterr()
    summary = _run(cache)
    err = capfd.readouterr().err
    for path in (truncated, zeroed, garbled, ckpt):
        assert str(path) in err, f"{path} not reported"
    assert summary.recomputed == 3 and summary.computed == 0  # the retrained CNN is the same model
    assert _tables(cache) == before
    load_tensors(ckpt)  # the checkpoint was rewritten whole


def test_the_store_never_computes_and_names_what_is_missing(clean_run, tmp_path):
    src, _, store = clean_run
    cache = fresh_cache(tmp_path / "missing")
    _copy_results(src, cache)
    job = store.datasets[0].plan.adaptive["fgsm-rs", store.datasets[0].profile.eps][0]
    (cache / "results" / job.key / "batch_0000005.pt").unlink()
    before = sorted(str(f) for f in (cache / "results").rglob("*"))
    with data_root_at(cache):
        with pytest.raises(ResultsNotReadyError, match=r"apgd-ce-reject@ms .*batch 5 missing.*make results"):
            tables.main_table("smoke")
        with pytest.raises(ResultsNotReadyError, match="batch 5 missing"):
            Store("smoke").load(job)
        for name in TABLES:
            if name != "zero_shot_table":
                with pytest.raises(ResultsNotReadyError):
                    getattr(tables, name)("smoke")
    assert sorted(str(f) for f in (cache / "results").rglob("*")) == before  # nothing was computed or written
    index_path_text = read_json(cache / "results" / "plans" / "smoke.json")
    assert job.key in index_path_text["jobs"]


def test_a_notebook_run_against_an_incomplete_store_stops_with_the_clear_error(clean_run, tmp_path):
    import papermill as pm

    src, _, store = clean_run
    cache = fresh_cache(tmp_path / "nb")
    _copy_results(src, cache)
    job = store.datasets[0].plan.clean["standard"]
    (cache / "results" / job.key / "batch_0000000.pt").unlink()
    nb = Path(__file__).resolve().parent.parent / "notebooks" / "02_main_table.ipynb"
    with data_root_at(cache):
        with pytest.raises(pm.PapermillExecutionError) as info:
            pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), parameters={"profile": "smoke",
                                "out_dir": str(tmp_path)}, kernel_name="python3", cwd=str(nb.parent),
                                progress_bar=False)
    assert info.value.ename == "ResultsNotReadyError" and "clean outputs" in info.value.evalue
    assert not (tmp_path / "main_table.csv").exists()


def test_tables_read_logits_and_similarities_only_never_images(clean_run, monkeypatch):
    import mslib.results as results_mod

    cache, _, _ = clean_run
    read = []
    real = results_mod.load_tensors
    monkeypatch.setattr(results_mod, "load_tensors", lambda path, *a, **k: read.append(Path(path).name) or real(path))
    monkeypatch.setenv("MSLIB_CACHE", str(cache))
    tables.main_table("smoke")
    assert read and not [n for n in read if n.endswith(".x.pt")]
    _, clean_x, adv_x, _ = tables.gallery("smoke", n=4)  # the gallery asks for images, and gets them
    assert any(n.endswith(".x.pt") for n in read) and clean_x.shape == adv_x.shape


def test_a_result_folder_names_its_batches_and_tells_done_from_missing_and_damaged(tmp_path, capfd):
    from mslib.plan import Job
    from mslib.results import ResultFolder

    job = Job("clean", "fashion_mnist", '{"batch_size": 3, "indices": [10, 11, 12, 13, 14, 15, 16]}', "standard")
    folder = ResultFolder.of(job, tmp_path)
    assert folder.path == tmp_path / job.key
    assert folder.starts() == [0, 3, 6] and folder.starts((1, 2)) == [3]  # 7 samples in batches of 3
    assert [p.name for p in folder.files(3)] == ["batch_0000003.pt", "batch_0000003.x.pt"]
    for b in folder.starts():
        folder.write(b, {"x": torch.zeros(min(3, 7 - b), 1, 2, 2), "f": torch.full((min(3, 7 - b), 2), float(b))})
    assert [folder.state(b) for b in folder.starts()] == ["done"] * 3
    assert folder.concat(("f",))["f"][:, 0].tolist() == [0, 0, 0, 3, 3, 3, 6]
    out, x = folder.files(0)
    x.write_bytes(x.read_bytes()[:-30])  # truncated images: found from their header and end record alone
    data = bytearray(folder.files(3)[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # an outputs file garbled in place: found by its checksum
    folder.files(3)[0].write_bytes(bytes(data))
    folder.files(6)[1].unlink()
    capfd.readouterr()
    assert [folder.state(b) for b in folder.starts()] == ["damaged", "damaged", "missing"]
    err = capfd.readouterr().err
    assert str(x) in err and str(folder.files(3)[0]) in err


def test_one_store_reads_each_result_once_and_matches_each_threshold_once(clean_run, monkeypatch):
    import mslib.store as store_mod
    from mslib import beyond
    from mslib.results import ResultFolder

    cache, before, _ = clean_run
    reads, matched = [], []
    real_read, real_match = ResultFolder.read, store_mod.matched_threshold
    monkeypatch.setattr(ResultFolder, "read", lambda self, b, images=False: reads.append((self.job.key, b))
                        or real_read(self, b, images))
    monkeypatch.setattr(store_mod, "matched_threshold", lambda *a: matched.append(a) or real_match(*a))
    with data_root_at(cache):
        store = Store("smoke")
        built = {name: getattr(tables, name)(store).to_csv(index=False) for name in TABLES}
        for name in ("beyond_table", "risk_coverage", "comparisons", "attack_health", "vlm_robustness"):
            getattr(beyond, name)(store)
    assert built == before  # the same tables as from a store per table
    assert reads and len(reads) == len(set(reads))  # every batch file of every result read once
    assert len(matched) == len(store.datasets[0].profile.classifiers)  # one threshold per classifier


def test_transfer_attacks_never_reuse_and_the_adaptive_chain_reuses_only_what_broke_multishield(clean_run):
    _, _, store = clean_run
    d = store.datasets[0]
    p, y = d.profile, d.labels
    for (clf, eps), jobs in d.plan.nonadaptive.items():
        for job in jobs:
            assert job.after == ()
            assert not store.load(job, ("reused",))["reused"].any(), job.label
    for clf in p.classifiers:
        small, large = d.plan.adaptive[clf, 0.05], d.plan.adaptive[clf, 0.1]
        ce_small, ce_large = store.outputs(small[0]), store.load(large[0], ("f", "s", "reused"))
        broken_small = broken(decide(ce_small.f, ce_small.s, p.tolerance), y, d.num_classes)
        assert torch.equal(ce_large["reused"], broken_small)  # reused exactly the samples broken at eps/2
        assert torch.equal(ce_large["f"][broken_small], ce_small.f[broken_small])
        # the paper's DLR ran on what its CE left unbroken
        dlr = store.load(large[1], ("reused",))["reused"]
        assert bool((broken(decide(ce_large["f"], ce_large["s"], p.tolerance), y, d.num_classes) <= dlr).all())


@pytest.mark.slow
def test_kill_9_at_any_point_then_a_rerun_gives_the_same_tables(clean_run, tmp_path):
    _, before, store = clean_run
    cache = fresh_cache(tmp_path / "killed")
    n_batches = 2 * len(store.datasets[0].plan.jobs())
    code = ("import torch; torch.set_num_threads(%d); from mslib.experiment import run_study; "
            "run_study('smoke', progress=False, overrides=%r)" % (torch.get_num_threads(), OVERRIDES))
    env = {**os.environ, "MSLIB_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((cache / "results").glob("*/batch_*[0-9].pt"))) < n_batches // 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list((cache / "results").glob("*/batch_*[0-9].pt")))
    assert 0 < partial < n_batches
    assert not (cache / "results" / "plans" / "smoke.json").exists()
    summary = _run(cache)
    assert summary.done and summary.reused >= partial - 1
    assert _tables(cache) == before


def test_cache_files_carry_a_checksum_that_every_read_verifies(tmp_path):
    path = save_tensors({"f": torch.arange(6.0).reshape(2, 3), "n": 3}, tmp_path / "a.pt")
    assert torch.equal(load_tensors(path)["f"], torch.arange(6.0).reshape(2, 3))
    good = path.read_bytes()
    damaged = {"truncated": good[:-7], "zeroed": bytes(len(good)), "empty": b"",
               "garbled": good[:60] + bytes([good[60] ^ 1]) + good[61:]}
    for what, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(DamagedFileError, match=str(path)) as info:
            load_tensors(path)
        assert info.value.path == path, what
    torch.save({"f": torch.zeros(2)}, path)  # a plain torch file has no checksum: refused, not trusted
    with pytest.raises(DamagedFileError, match="no checksum header"):
        load_tensors(path)


# ---- damage anywhere: the VLM's weights, every JSON file, a kill during training ------------------------------
def test_another_vlm_weight_file_in_place_changes_every_key(clean_run, tmp_path):
    """Catches: the VLM's checkpoint hash left out of the jobs' keys (or only its config file hashed), so
    another VLM in place would be scored with the old VLM's cached similarities."""
    from safetensors.torch import load_file, save_file

    from mslib.cache import write_checksums
    from mslib.experiment import Workspace, execute
    from mslib.models.local import model_dir
    from mslib.models.openclip_factory import CONFIG_NAME, WEIGHTS_NAME
    from mslib.profiles import get_profile

    src, _, store = clean_run
    cache = fresh_cache(tmp_path / "vlm", copy_models=True)
    _copy_results(src, cache)
    d = store.datasets[0]
    with data_root_at(cache):
        folder = model_dir("lit", d.profile, d.profile.vlm_spec)
    state = load_file(folder / WEIGHTS_NAME)
    name = max((k for k in state if k.startswith("visual.")), key=lambda k: state[k].numel())
    state[name] = -state[name]  # a valid open_clip folder of another model (its checksums match)
    save_file(state, folder / WEIGHTS_NAME)
    write_checksums(folder, [CONFIG_NAME, WEIGHTS_NAME])
    with data_root_at(cache):
        ws = Workspace(get_profile("smoke", **OVERRIDES))
        plan = ws.plan()
        assert [j.kind for j in plan.jobs()] == [j.kind for j in d.plan.jobs()]
        assert not {j.key for j in plan.jobs()} & {j.key for j in d.plan.jobs()}  # every result uses the VLM
        summary = execute(ws, [plan.clean["standard"]], progress=False)  # so none is reused: computed afresh
        assert summary.computed == 2 and summary.reused == 0
        new = load_tensors(cache / "results" / plan.clean["standard"].key / "batch_0000000.pt")
    old = store.outputs(d.plan.clean["standard"])
    assert torch.equal(new["f"], old.f[:len(new["f"])])  # the same classifier ...
    assert not torch.allclose(new["s"], old.s[:len(new["s"])])  # ... scored with the other VLM


def test_damaged_json_files_are_named_and_recovered(clean_run, tmp_path, capfd):
    """Catches: a garbled results index, result ``record.json`` or model ``train_info.json`` crashing the
    run (a bare JSONDecodeError), being used, or being rewritten silently; and a ``train_info.json`` missing
    beside intact weights (a training killed after saving them) taken for a finished training."""
    from mslib.models.local import model_dir

    src, before, store = clean_run
    cache = fresh_cache(tmp_path / "json", copy_models=True)
    _copy_results(src, cache)
    d = store.datasets[0]
    p = d.profile
    index = cache / "results" / "plans" / "smoke.json"
    record = cache / "results" / d.plan.adaptive["standard", p.eps][0].key / "record.json"
    with data_root_at(cache):
        info = model_dir("cnn", p, p.classifier_specs["standard"]) / "train_info.json"
        missing = model_dir("cnn", p, p.classifier_specs["fgsm-rs"]) / "train_info.json"
    index.write_text(index.read_text()[:100])
    record.write_text("{\"garbled\": ")
    info.write_bytes(b"\x00" * 40)
    missing.unlink()
    with data_root_at(cache), pytest.raises(ResultsNotReadyError, match=f"the results index {index} is damaged"):
        Store("smoke")
    capfd.readouterr()
    summary = _run(cache)
    err = capfd.readouterr().err
    for path in (index, record, info):
        assert f"damaged cache file {path}: unreadable JSON" in err, f"{path} not named"
    assert summary.computed == 0 and summary.recomputed == 0  # the retrained CNNs are the same models
    assert read_json(info)["name"] == "standard" and read_json(missing)["name"] == "fgsm-rs"
    assert read_json(record) == d.plan.adaptive["standard", p.eps][0].record()
    assert _tables(cache) == before  # the index was rewritten


def test_kill_9_during_model_training_then_a_rerun_gives_the_same_tables(clean_run, tmp_path):
    """Catches: a model folder that a killed training leaves looking finished (weights without the rest,
    or a half-written file), so the rerun uses a half-trained model and every key and table changes."""
    from mslib.models.local import model_dir

    src, before, store = clean_run
    cache = fresh_cache(tmp_path / "killed-training")
    _copy_results(src, cache)
    p = store.datasets[0].profile
    with data_root_at(cache):
        folder = model_dir("cnn", p, p.classifier_specs["fgsm-rs"])
    linked_models_but(cache, folder)
    kill_during_training(cache, "from mslib.models import load_classifier; from mslib.profiles import get_profile; "
                         f"load_classifier(get_profile('smoke', **{OVERRIDES!r}), 'fgsm-rs')")
    assert (folder / "record.json").is_file() and not (folder / "train_info.json").exists(), "killed too late"
    summary = _run(cache)
    assert summary.done and summary.computed == 0  # retrained whole: the same weights, the same keys
    assert _tables(cache) == before


def test_a_damaged_record_or_train_info_is_named_and_never_used(tmp_path, capfd):
    """Catches: a garbled ``record.json`` rewritten silently, and a model folder whose ``train_info.json`` is
    garbled or missing (a training killed after saving the weights) taken for a finished model."""
    from mslib.cache import entry_dir, folder_intact, write_checksums, write_json

    with data_root_at(tmp_path):
        record = {"job": "x", "eps": 0.1}
        folder = entry_dir("results", record)
        (folder / "record.json").write_text('{"job": ')
        capfd.readouterr()
        assert entry_dir("results", record) == folder and read_json(folder / "record.json") == record
        assert f"damaged cache file {folder / 'record.json'}: unreadable JSON" in capfd.readouterr().err
        entry_dir("results", record)  # whole again: nothing to say
        assert capfd.readouterr().err == ""
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    write_checksums(model, ["w.bin"])
    assert not folder_intact(model, "w.bin")  # no train_info.json yet: the training did not finish
    write_json({"name": "m"}, model / "train_info.json")
    assert folder_intact(model, "w.bin")
    (model / "train_info.json").write_bytes(b"\x00" * 16)
    capfd.readouterr()
    assert not folder_intact(model, "w.bin")
    assert f"damaged cache file {model / 'train_info.json'}" in capfd.readouterr().err
