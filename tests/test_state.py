"""The state document: patches, the example connector's state migrated, a newer version refused."""

from __future__ import annotations

import json

import pytest

from syncflow import StateError
from syncflow._state import StateDocument


def test_state_patches_apply_in_order_and_delete() -> None:
    state = StateDocument()
    state.apply("accelo.jobs", [(("run",), {"lower": 1, "slices": {"0": {"after": None}}})])
    state.apply("accelo.jobs", [(("run", "slices", "0"), {"after": 7})])
    assert state.stream("accelo.jobs") == {"run": {"lower": 1, "slices": {"0": {"after": 7}}}}
    state.apply("accelo.jobs", [((), {"cursor": 9})])
    assert state.as_dict() == {"version": 1, "streams": {"accelo.jobs": {"cursor": 9}}}
    # What a checkpoint writes reads back as the same document (JSON has no tuples, sets or datetimes).
    assert json.loads(json.dumps(state.as_dict())) == state.as_dict()
    assert StateDocument.load(json.loads(json.dumps(state.as_dict()))).as_dict() == state.as_dict()


def test_the_example_connectors_state_is_migrated_with_a_lookback() -> None:
    legacy = {"last_company_sync": "2024-05-01T00:00:00Z", "last_job_sync": "2024-05-02T00:00:00Z",
              "last_sync_time": "2024-05-03T10:00:00Z"}  # fmt: skip
    state = StateDocument.load(legacy)
    assert state.stream("accelo.companies") == {"cursor": 1714435200}  # one day earlier
    assert state.stream("accelo.jobs") == {"cursor": 1714521600}
    assert state.stream("awardco.user") == {"cursor": "2024-05-02T10:00:00Z"}


def test_a_state_from_a_newer_syncflow_is_refused_rather_than_clobbered() -> None:
    with pytest.raises(StateError, match="version 99"):
        StateDocument.load({"version": 99, "streams": {}})
