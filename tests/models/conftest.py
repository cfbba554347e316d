"""Fixtures of the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["rows", "gramian"])
def route(request, monkeypatch):
    """Both fit routes of the item-item models (ItemKNN, AssociationRules): from the rows (the
    default when X fits a task) and from the Gramian's column blocks."""
    if request.param == "gramian":
        monkeypatch.setattr("dask_rec.models._item_item.rows_route_fits", lambda *args: False)
    return request.param
