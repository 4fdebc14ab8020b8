"""The one mapping from codes to names: complete for the study's attacks, and used by the display copies."""
from __future__ import annotations

import pandas as pd

from mslib import labels
from mslib.plan import ENSEMBLE


def test_every_ensemble_attack_has_its_own_label():
    for target, attack in ENSEMBLE:
        code = f"{attack}@{target}"
        assert code in labels.ATTACKS, f"{code} has no label in mslib.labels.ATTACKS"
        assert not labels.is_raw_code(labels.attack(code))
    assert labels.attack("apgd-dlr-reject@ms").startswith("APGD-DLR, rejection-aware (adaptive")
    assert len(set(labels.ATTACKS.values())) == len(labels.ATTACKS), "two attacks share a label"


def test_raw_codes_are_recognized():
    for code in ("clean_acc", "robust_acc_adaptive", "apgd-ce@vlm", "square-reject@ms", "ms_worst", "fashion_mnist"):
        assert labels.is_raw_code(code), code
    for name in ("Fashion-MNIST", "standard CNN", "robust acc. (%)", "Multi-Shield, clean", "APGD-CE on the VLM alone (transfer)"):
        assert not labels.is_raw_code(name), name
    for mapping in (labels.ATTACKS, labels.SETTINGS, labels.COLUMNS, labels.DATASETS, labels.OUTCOMES,
                    labels.TOLERANCE_METRICS):
        for name in mapping.values():
            assert not labels.is_raw_code(name), name


def test_display_names_codes_and_shows_percent_with_ci():
    df = pd.DataFrame({"dataset": ["fashion_mnist"], "classifier": ["standard"], "attack": ["apgd-ce-reject@ms"],
                       "robust_acc": [0.625], "robust_acc_lo": [0.47], "robust_acc_hi": [0.758], "gain_worst": [0.05],
                       "n": [40]})
    out = labels.display(df, points=["gain_worst"])
    assert list(out.columns) == ["dataset", "classifier", "attack", "robust acc. (%)", "gain, worst case (points)", "n"]
    row = out.iloc[0]
    assert row["robust acc. (%)"] == "62.5 [47.0, 75.8]"
    assert row["gain, worst case (points)"] == "+5.0"
    assert row["dataset"] == "Fashion-MNIST" and row["attack"] == labels.ATTACKS["apgd-ce-reject@ms"]
    assert not any(labels.is_raw_code(c) for c in out.columns)
    assert not any(labels.is_raw_code(v) for v in out.iloc[0].tolist())


def test_display_of_a_row_without_ci_gives_the_value_alone():
    df = pd.DataFrame({"clf_robust_acc": [0.5, 0.25], "clf_robust_acc_lo": [0.4, float("nan")],
                       "clf_robust_acc_hi": [0.6, float("nan")]})
    assert labels.display(df).iloc[:, 0].tolist() == ["50.0 [40.0, 60.0]", "25.0"]
