"""What a dataset is to the package: one :class:`DatasetSpec`, which every consumer reads.

A dataset is declared once, beside its loader (:data:`mslib.data.FASHION_MNIST`, the paper's datasets in
:data:`mslib.paper_data.SPECS`), and registered in :data:`mslib.data.DATASETS`. Loading, label reading, the
original code's evaluation draw (:mod:`mslib.data`), downloading and presence checks (:mod:`mslib.fetch`),
stand-in files (:mod:`mslib.standins`) and the name readers see (:mod:`mslib.labels`) all loop over the
specs; none of them names a dataset.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

Loader = Callable[[str, dict[str, Any]], tuple[Any, Any, list[str]]]
LabelReader = Callable[[str, dict[str, Any]], tuple[Any, list[str]]]


@dataclass(frozen=True)
class Archive:
    """One published archive of a dataset: its https URL, its published MD5, and the sub-folder of the
    extraction tree it is extracted into ("" for the top)."""

    url: str
    md5: str
    into: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the package needs to know about one dataset.

    ``load(split, options) -> (images, labels, class_names)``; ``labels(split, options) -> (labels,
    class_names)`` reads labels without decoding images (None: the images are decoded to draw a subset).
    ``root()`` is the folder the dataset lives under and ``folder`` its own folder there ("" when the root is
    the dataset itself); ``marker``, relative to the root, proves it is there. ``archives`` (with
    ``unpack(tree, safe_extract)``, run on the extraction tree for archives inside archives) make it downloadable; otherwise
    ``manual`` says how a person provides it (None: nothing to provide, e.g. a system package).
    ``defaults``: the loader's default options; ``option_keys``: the options it accepts beyond the common
    ones. The original code's evaluation draw starts at ``sample_start``, or takes the first n of the test
    list when ``sample_first_n``. ``standin``: ``"module:function"`` writing stand-in files under a data root.
    """

    name: str
    display: str
    load: Loader
    labels: LabelReader | None = None
    root: Callable[[], Path] | None = None
    folder: str = ""
    marker: str = ""
    archives: tuple[Archive, ...] = ()
    unpack: Callable[[Path, Callable[[Path, Path], None]], None] | None = None
    manual: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    option_keys: frozenset[str] = frozenset()
    sample_start: int = 0
    sample_first_n: bool = False
    standin: str | None = None

    def base(self, options: Mapping[str, Any] | None = None) -> Path:
        """The root the dataset lives under (``options["root"]`` overrides :attr:`root`)."""
        options = options or {}
        if options.get("root"):
            return Path(options["root"])
        if self.root is None:
            raise ValueError(f"dataset {self.name!r} has no on-disk root")
        return self.root()

    def path(self, options: Mapping[str, Any] | None = None) -> Path:
        """The file or folder whose presence means the dataset is there."""
        return self.base(options) / self.marker if self.marker else self.base(options)

    def directory(self, options: Mapping[str, Any] | None = None) -> Path:
        """The dataset's own folder (what a fetch replaces and marks complete)."""
        return self.base(options) / self.folder if self.folder else self.base(options)

    def write_standin(self, root: Path) -> Any:
        """Write the stand-in files under the data root ``root`` (``ValueError`` when the spec has none)."""
        if self.standin is None:
            raise ValueError(f"dataset {self.name!r} has no stand-in writer")
        module, func = self.standin.split(":")
        return getattr(importlib.import_module(module), func)(root)


def lookup(specs: Mapping[str, DatasetSpec], name: Any) -> DatasetSpec:
    """``specs[name]``, or a ``ValueError`` listing the registered names."""
    if not isinstance(name, str) or name not in specs:
        raise ValueError(f"unknown dataset {name!r}; registered: {sorted(specs)}")
    return specs[name]


__all__ = ["Archive", "DatasetSpec", "lookup"]
