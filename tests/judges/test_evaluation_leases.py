"""The evaluation runs' owner lease across gateways sharing one store (real gateways on loopback, SQLite, the
fake upstream as the judge):

- a gateway starting while another owns a run (renewing its lease) takes only the run nobody holds, and the
  owner keeps its own: a rolling restart of one replica steals no live replica's run;
- a run whose owner died (its lease left to expire, never released) is taken by a gateway already running
  once the lease times out, resumed, and completes;
- an owner whose run was taken meanwhile (it stalled past the lease timeout) learns it at its next renewal,
  says so once, and stops settling it.

Leases here are short or looked for often (``RunLease``) so the tests wait seconds, not the production
timeouts; every wait polls for the outcome under a generous deadline.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.store.evaluation_runs import Lease, claim_run
from judges.evaluations import LEASE_TIMEOUT_S, RunLease
from tests.judges.evaluation_servers import EvalGateway, evaluation_gateway, wait_for
from tests.llm.conftest import FakeUpstream
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)

ITEMS = [{"inputs": f"q{i}", "outputs": f"a{i}"} for i in range(6)]


def _owner(gw: EvalGateway, evaluation_id: str) -> str | None:
    row = gw.evaluations.get(evaluation_id)
    assert row is not None, evaluation_id
    owner: str | None = row["owner"]
    return owner


def _stored_like(gw: EvalGateway, model_id: str, *, owner: str | None) -> str:
    """A run stored with the request and items of ``model_id``, held by ``owner`` (heartbeat now) or by no one:
    what a process leaves when it stored a run and died at once, or a run stored before the leases."""
    model = gw.evaluations.get(model_id)
    assert model is not None
    items = [{"inputs": item["inputs"], "outputs": item["outputs"]} for item in gw.evaluations.items(model_id)]
    evaluation_id = str(uuid.uuid4())
    gw.evaluations.create(evaluation_id, model["request"], items, model["judge_count"], owner=owner)
    return evaluation_id


def test_a_gateway_starting_takes_no_run_a_live_gateway_owns(fake_upstream: FakeUpstream, tmp_path: Path) -> None:  # noqa: F811
    # No judge worker anywhere (judges.workers: external, none started): the runs stay unfinished throughout.
    external: dict[str, Any] = {"workers": "external"}
    # The owner looks for runs to take only as it starts (before the unowned run below exists).
    with evaluation_gateway(tmp_path, fake_upstream, external, lease=RunLease(claim_interval_s=3600)) as owner:
        live = owner.post({"judges": ["safety"], "items": ITEMS})["id"]
        wait_for(lambda: owner.evaluations.item_counts(live)["queued"] == len(ITEMS), what="the owner's run fed")
        held_by = _owner(owner, live)
        assert held_by is not None and owner.view(live, items=False)["status"] == "running"
        heartbeat = owner.evaluations.get(live)["heartbeat_at"]  # type: ignore[index]
        unowned = _stored_like(owner, live, owner=None)
        # A second replica starts, looking for runs to take every 0.1 s with the production lease timeout.
        replica = RunLease(timeout_s=LEASE_TIMEOUT_S, claim_interval_s=0.1)
        with evaluation_gateway(tmp_path, fake_upstream, external, lease=replica) as second:
            # It takes the run nobody holds (so it has looked at the owner's run too, in the same query) ...
            adopter = wait_for(lambda: _owner(second, unowned), what="the unowned run taken by the second gateway")
            assert adopter != held_by
            wait_for(lambda: second.evaluations.item_counts(unowned)["queued"] == len(ITEMS), what="it fed")
            # ... and not the live owner's, whose lease the owner keeps renewing.
            renewed = wait_for(
                lambda: (row := owner.evaluations.get(live)) is not None and row["heartbeat_at"] > heartbeat and row,
                what="the owner's lease renewed",
            )
            assert renewed["owner"] == held_by and renewed["status"] == "running"
            assert _owner(second, unowned) == adopter
        # The owner still holds its run (its settle loop renewing), fed once: each item queued once.
        assert _owner(owner, live) == held_by
        assert owner.evaluations.item_counts(live)["queued"] == len(ITEMS)


def test_a_run_whose_owner_died_is_taken_over_by_a_running_gateway_and_completes(
    fake_upstream: FakeUpstream,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="judges.evaluations")
    # A short lease, looked for often: a dead owner's run is taken about 2 s after its last heartbeat.
    with evaluation_gateway(tmp_path, fake_upstream, lease=RunLease(timeout_s=2.0, claim_interval_s=0.1)) as gw:
        first = gw.post({"judges": ["safety"], "items": ITEMS})["id"]
        assert gw.wait(first)["status"] == "completed"
        ours = _owner(gw, first)
        # A process stored a run (holding its lease from the insert, heartbeat now) and died: nobody renews it.
        dead = f"dead-host/1/{uuid.uuid4().hex[:12]}"
        orphan = _stored_like(gw, first, owner=dead)
        view = gw.wait(orphan)
        assert view["status"] == "completed" and view["progress"]["done"] == len(ITEMS), view
        assert _owner(gw, orphan) == ours  # taken over by the running gateway
        assert sorted(-1 if a.item_index is None else a.item_index for a in gw.stored(orphan)) == list(
            range(len(ITEMS))
        )  # one verdict per item
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"Evaluation {orphan} resumed")]
    assert len(resumed) == 1 and f"previous owner {dead}" in resumed[0], resumed


def test_an_owner_whose_run_was_taken_stops_settling_it(
    fake_upstream: FakeUpstream,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="judges.evaluations")
    with evaluation_gateway(tmp_path, fake_upstream, {"workers": "external"}) as gw:  # nothing judged
        taken = gw.post({"judges": ["safety"], "items": ITEMS})["id"]
        wait_for(lambda: gw.evaluations.item_counts(taken)["queued"] == len(ITEMS), what="the run fed")
        row = gw.evaluations.get(taken)
        assert row is not None and row["status"] == "running"
        # Another process took the run (as after a stall of its owner past the lease timeout): the same
        # compare-and-set, retried on the lease as read until no renewal slips in between.
        wait_for(
            lambda: (r := gw.evaluations.get(taken)) is not None
            and claim_run(gw.evaluations.engine, taken, "running", r["started_at"], owner="thief",
                          lease=Lease(r["owner"], r["heartbeat_at"])),
            what="the run taken",
        )  # fmt: skip

        def warned() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and taken in r.getMessage()]

        (warning,) = wait_for(warned, what="the owner's warning")
        assert "lease was taken by thief" in warning and "stops feeding and settling" in warning
        assert _owner(gw, taken) == "thief"  # the old owner renews it no more (nor takes it back)
    assert len(warned()) == 1  # once, not at every pass until the gateway stopped
