"""Run several notebooks through papermill in one Jupyter kernel, each as if in a fresh one.

A fresh kernel per notebook spends about 4 s (one test worker's core) starting and importing torch, pandas and
matplotlib; a fixture that runs twelve notebooks pays that twelve times. Here the kernel starts once and,
before each notebook, forgets every name (``%reset -f``), forgets ``mslib``'s modules (so its registries, e.g.
the course's record of checks run and the attack registry, start empty as in a fresh kernel), closes the
figures and moves to the notebook's own folder. A notebook that uses a name it never defined still fails; what
stays is third-party modules already imported, which a fresh kernel would import the same.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def shared_kernel(kernel_name: str = "python3") -> Iterator[Callable[..., None]]:
    """``run(src, target, parameters, cwd)`` executes ``src`` into ``target`` with papermill (raising
    ``PapermillExecutionError`` as papermill does) in a kernel started once for the whole block."""
    import papermill as pm
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    try:
        def run(src: Path, target: Path, parameters: dict, cwd: Path) -> None:
            # the names go last, with the helpers' own and every object of the dropped mslib modules
            prelude = ("import os as _os, sys as _sys, matplotlib.pyplot as _plt\n"
                       "for _m in [m for m in _sys.modules if m == 'mslib' or m.startswith('mslib.')]:\n"
                       "    del _sys.modules[_m]\n"
                       f"_plt.close('all'); _os.chdir({str(cwd)!r})\n"
                       "get_ipython().run_line_magic('reset', '-f')\n")
            # a client of its own each time: papermill's run closes the event loop an older client waits on
            kc = km.client()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=120)
                reply = kc.execute_interactive(prelude, timeout=120, store_history=False)
            finally:
                kc.stop_channels()
            assert reply["content"]["status"] == "ok", reply["content"]
            pm.execute_notebook(str(src), str(target), parameters=parameters, kernel_name=kernel_name,
                                cwd=str(cwd), progress_bar=False, km=km)

        yield run
    finally:
        km.shutdown_kernel(now=True)
