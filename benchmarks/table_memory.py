"""Peak memory of building the main table from cached results (run after `make results PROFILE=...`).

Prints, for ``mslib.tables.main_table(profile)`` in a fresh process: the growth of the peak resident set
(ru_maxrss) over the process after imports, the bytes of tensors read from the cache in all, and the
largest amount of those held at once (tensors are counted from the moment they are loaded until they are
freed). Works with any version of mslib whose tables read through ``torch.load``, so the same script
measures before and after a change.

    python benchmarks/table_memory.py --profile tiny
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import weakref


def measure(profile: str) -> dict[str, float]:
    import torch

    import mslib.tables as tables

    live = {"now": 0, "peak": 0, "total": 0}

    def track(t: torch.Tensor) -> None:
        n = t.numel() * t.element_size()
        live["now"] += n
        live["total"] += n
        live["peak"] = max(live["peak"], live["now"])
        weakref.finalize(t, lambda n=n: live.__setitem__("now", live["now"] - n))

    def walk(obj) -> None:
        if isinstance(obj, torch.Tensor):
            track(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    real_load = torch.load

    def counting_load(*args, **kwargs):
        out = real_load(*args, **kwargs)
        walk(out)
        return out

    torch.load = counting_load
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    df = tables.main_table(profile)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"profile": profile, "rows": len(df), "rss_growth_mb": (peak - base) / 1024,
            "tensor_bytes_read_mb": live["total"] / 2**20, "tensor_bytes_held_peak_mb": live["peak"] / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args()
    out = measure(args.profile)
    print(json.dumps(out))
    print(f"main_table({args.profile}): peak RSS +{out['rss_growth_mb']:.1f} MB over imports; tensors read "
          f"{out['tensor_bytes_read_mb']:.2f} MB in all, at most {out['tensor_bytes_held_peak_mb']:.2f} MB held at once",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
