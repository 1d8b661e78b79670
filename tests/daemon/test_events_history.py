"""The daemon's last events, kept for a client that connects late: bounded, numbered, progress ticks left out."""

from shoal.daemon.control.events import Events


def test_the_last_events_are_kept_in_order_with_the_seq_their_subscribers_saw():
    events = Events(["datasets", "transfers"], history=3)
    for n in range(5):
        events.publish("datasets", {"name": f"d{n}"})
    recent = events.recent()
    assert [(e["seq"], e["topic"], e["data"]) for e in recent] == [
        (3, "datasets", {"name": "d2"}), (4, "datasets", {"name": "d3"}), (5, "datasets", {"name": "d4"}),
    ]
    assert all(isinstance(e["time"], int) for e in recent)


def test_passing_states_are_not_history_but_still_count():
    events = Events(["transfers", "watches"])
    events.publish("transfers", {"id": 1, "event": "started", "name": "x"})
    for _ in range(300):
        events.publish("transfers", {"id": 1, "event": "progress", "name": "x"})
    events.publish("transfers", {"id": 1, "event": "done", "name": "x"})
    for state in ("settling", "waiting", "sharing", "idle", "error"):
        events.publish("watches", {"change": "state", "watch": {"name": "run", "state": state}})
    assert [(e["seq"], e["topic"], e["data"].get("event")) for e in events.recent()] == [
        (1, "transfers", "started"), (302, "transfers", "done"), (307, "watches", None),
    ]
    assert events.recent()[-1]["data"]["watch"]["state"] == "error"


def test_a_map_changed_after_publishing_leaves_the_history_as_it_was():
    events = Events(["datasets"])
    data = {"name": "x", "version": {"seq": 1}}
    events.publish("datasets", data)
    data["version"]["seq"] = 2
    assert events.recent()[0]["data"] == {"name": "x", "version": {"seq": 1}}


def test_each_run_has_its_own_name():
    assert Events(["datasets"]).run != Events(["datasets"]).run
