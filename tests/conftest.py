"""Shared fixtures: small cost models with round numbers, and tiny traces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from workbench.costmodel.linear import LinearCostModel


@pytest.fixture
def unit_cost() -> LinearCostModel:
    """Round coefficients so golden schedules can be computed by hand."""
    return LinearCostModel(a_p=1.0, b_p=0.5, a_d=1.0, b_d=0.0, c_d=0.0, name="unit")


@pytest.fixture
def small_cost() -> LinearCostModel:
    """A cost model with every term non-zero, of LLaMA-65B-like proportions."""
    return LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")


def make_trace(rows) -> pd.DataFrame:
    """A trace from (input_tokens, output_tokens[, arrival_s]) tuples; ids are 0..n-1."""
    data = [dict(request_id=i, input_tokens=r[0], output_tokens=r[1], arrival_s=r[2] if len(r) > 2 else 0.0)
            for i, r in enumerate(rows)]
    return pd.DataFrame(data)



def pytest_configure(config):
    """Keep nbval's executions of the notebooks for the documentation site (site/nbval_cache.py)."""
    path = Path(__file__).resolve().parents[1] / "site" / "nbval_cache.py"
    spec = importlib.util.spec_from_file_location("workbench_nbval_cache", path)
    if spec is None or not path.is_file():
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.available() and not config.pluginmanager.has_plugin("workbench-nbval-cache"):
        config.pluginmanager.register(module.NbvalCache(), "workbench-nbval-cache")


def pytest_collection_modifyitems(config, items):
    """The documentation site's test runs last: its build reuses the notebook executions of the
    nbval run in the same session (site/nbval_cache.py) instead of executing them again."""
    site = [item for item in items if item.path.name == "test_docs_site.py"]
    if site:
        items[:] = [item for item in items if item.path.name != "test_docs_site.py"] + site
