"""The README's metrics table lists every metric the server exports."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import schoolsuite
from schoolsuite import metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_metric_is_in_the_readme_table() -> None:
    """Each collector of the registry (all modules imported) has a row `name{labels}` in README's Metrics."""
    for info in pkgutil.walk_packages(schoolsuite.__path__, "schoolsuite."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    text = README.read_text()
    table = text[text.index("## Metrics"):]
    listed = set(re.findall(r"^\| `(schoolsuite_[a-z_]+)(?:\{[a-z_,]+\})?` \|", table, re.M))
    exported = set()
    for collector in set(metrics.REGISTRY._names_to_collectors.values()):
        exported.add(collector._name + ("_total" if collector._type == "counter" else ""))
    assert exported - listed == set(), f"metrics missing from README.md: {sorted(exported - listed)}"
    assert listed - exported == set(), f"README.md lists metrics that do not exist: {sorted(listed - exported)}"
