"""End to end over TLS with the ``caldav`` library: discovery, recurrence by time range, tasks, sync."""

from __future__ import annotations

import datetime as dt

import caldav
import pytest

from dav_helpers import PASSWORD, event, todo
from dav_server import DavServer

A = "anna@school.example"


@pytest.fixture
def client(dav: DavServer) -> caldav.DAVClient:
    return caldav.DAVClient(url=dav.base + "/", username=A, password=PASSWORD,
                            ssl_verify_cert=str(dav.instance.cert))


def default_calendar(client: caldav.DAVClient) -> caldav.Calendar:
    return next(c for c in client.principal().calendars() if c.url.path.rstrip("/").endswith("/calendar"))


def test_discovery_from_the_server_root(client: caldav.DAVClient) -> None:
    """From nothing but https://host/ the library finds the principal and the default calendar."""
    principal = client.principal()
    assert principal.url.path.rstrip("/").endswith("school.example")
    names = {c.get_display_name() for c in principal.calendars()}
    assert "Calendar" in names


def test_recurring_event_found_by_time_range(client: caldav.DAVClient) -> None:
    """A weekly event is found in a later week by a time-range search, expanded to that occurrence."""
    cal = default_calendar(client)
    cal.save_event(event("weekly-lib-1", "20260105T100000Z", "20260105T110000Z", "Wochenbesprechung",
                         rrule="FREQ=WEEKLY;COUNT=20"))
    found = cal.search(start=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc),
                       end=dt.datetime(2026, 3, 9, tzinfo=dt.timezone.utc), event=True, expand=True)
    uids = [o.icalendar_component["UID"] for o in found]
    assert uids == ["weekly-lib-1"]
    start = found[0].icalendar_component["DTSTART"].dt
    assert start == dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)
    assert cal.search(start=dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc),
                      end=dt.datetime(2027, 1, 8, tzinfo=dt.timezone.utc), event=True, expand=True) == []


def test_task_round_trip(client: caldav.DAVClient) -> None:
    """A task is saved, found among the todos, completed, and then no longer pending."""
    cal = default_calendar(client)
    cal.save_todo(todo("lib-task-1", "Elternbriefe drucken"))
    pending = [t.icalendar_component["UID"] for t in cal.todos()]
    assert "lib-task-1" in pending
    task = cal.todo_by_uid("lib-task-1")
    task.complete()
    assert "lib-task-1" not in [t.icalendar_component["UID"] for t in cal.todos()]
    assert "lib-task-1" in [t.icalendar_component["UID"] for t in cal.todos(include_completed=True)]


def test_sync_after_changes(client: caldav.DAVClient) -> None:
    """sync-collection after a change, an addition and a deletion returns exactly those three objects."""
    cal = client.principal().make_calendar(name="Sync-Test", cal_id="sync-test")
    for n in range(3):
        cal.save_event(event(f"sync-{n}"))
    objects = cal.objects_by_sync_token(load_objects=True)
    token = objects.sync_token
    assert len(objects) == 3
    changed = cal.event_by_uid("sync-0")
    changed.icalendar_component["SUMMARY"] = "geändert"
    changed.save()
    cal.event_by_uid("sync-1").delete()
    cal.save_event(event("sync-9"))
    delta = cal.objects_by_sync_token(sync_token=token, load_objects=False)
    assert delta.sync_token != token
    assert len(list(delta)) == 3
    again = cal.objects_by_sync_token(sync_token=delta.sync_token, load_objects=False)
    assert list(again) == []
