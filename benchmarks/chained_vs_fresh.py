"""How much the old eps-chain reuse overstated Multi-Shield's non-adaptive robust accuracy (run after `make results`).

The study attacks transfer targets fresh at every eps. The old reuse took an example that broke the *classifier*
at the previous eps of the grid as the larger-eps example and scored it on Multi-Shield; this script emulates
that from the same stored fresh results and prints both, with 95% Wilson intervals and the discordant samples.

    python benchmarks/chained_vs_fresh.py tiny
"""
import sys

import torch

from mslib import metrics
from mslib.metrics import BROKEN, status, worst_case
from mslib.store import Store

profile = sys.argv[1] if len(sys.argv) > 1 else "tiny"
store = Store(profile)
for d in store.datasets:
    p, y, k = d.profile, d.labels, d.num_classes
    grid = sorted(e for e in p.eps_grid if 0 < e <= p.eps)  # the chain up to the eps reported
    for clf in p.classifiers:
        clean = store.outputs(d.plan.clean[clf])
        fresh_st, chained_st = [], []
        for a in range(len(d.plan.nonadaptive[clf, p.eps])):  # APGD-CE, APGD-DLR
            prev = clean
            for e in grid:
                fresh = store.outputs(d.plan.nonadaptive[clf, e][a])
                reuse = prev.clf_pred() != y  # broke the classifier at the smaller eps (or clean)
                f = torch.where(reuse[:, None], prev.f, fresh.f)
                s = torch.where(reuse[:, None], prev.s, fresh.s)
                chained = type(fresh)(f=f, s=s)
                if e == p.eps:
                    fresh_st.append(status(fresh.ms_pred(p.tolerance), y, k))
                    chained_st.append(status(chained.ms_pred(p.tolerance), y, k))
                prev = chained
        fr, ch = worst_case(fresh_st), worst_case(chained_st)
        rf, rc = metrics.rate(fr < BROKEN), metrics.rate(ch < BROKEN)
        print(f"{p.dataset}/{clf} eps={p.eps:g}: Multi-Shield robust, non-adaptive: fresh {100*rf.value:.1f}% "
              f"[{100*rf.low:.1f}, {100*rf.high:.1f}] vs chained {100*rc.value:.1f}% [{100*rc.low:.1f}, {100*rc.high:.1f}]; "
              f"samples robust only when chained: {int(((ch < BROKEN) & (fr == BROKEN)).sum())}, only fresh: "
              f"{int(((fr < BROKEN) & (ch == BROKEN)).sum())}")
