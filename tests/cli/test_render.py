"""Human renderings of command results, and the progress views."""

import io
import json
import time

import pytest

from shoal.cli import render
from shoal.cli.progress import PLAIN_INTERVAL, PlainProgress, RichProgress, describe, open_progress
from shoal.client import fmt

VERSION = {
    "name": "imagenet",
    "seq": 3,
    "id": "ab" * 32,
    "root": "cd" * 32,
    "parents": ["ef" * 32],
    "author": "01" * 32,
    "time": 1_700_000_000,
    "message": "relabel",
    "size": 4_500_000_000,
    "files": 1234,
}


@pytest.mark.parametrize(
    "size, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (4_500_000_000, "4.5 GB"), (3 * 10**18, "3000.0 PB")],
)
def test_sizes_use_decimal_units(size, text):
    assert fmt.format_size(size) == text


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (59.9, "59s"), (185, "3m05s"), (7620, "2h07m"), (356400, "4d03h")]
)
def test_durations_show_two_units_at_most(seconds, text):
    assert fmt.format_duration(seconds) == text


def test_rates_read_zero_as_unlimited():
    assert fmt.format_rate(0) == "unlimited"
    assert fmt.format_rate(12_500_000) == "12.5 MB/s"


def test_tables_pad_columns_and_right_align_numbers():
    text = render.table(("NAME", "SIZE"), [("a", "1 B"), ("longer", "10.0 kB")], right=(1,))
    assert text.splitlines() == ["NAME       SIZE", "a           1 B", "longer  10.0 kB"]


def test_json_output_is_one_sorted_object():
    out = io.StringIO()
    render.print_json({"b": 1, "a": "é"}, out)
    assert out.getvalue() == '{\n  "a": "é",\n  "b": 1\n}\n'
    assert json.loads(out.getvalue()) == {"a": "é", "b": 1}


def test_share_shows_the_version_line_then_what_changed():
    created = {"version": VERSION, "created": True, "new_bytes": 12_300_000, "files_rehashed": 3, "warnings": []}
    assert render.render_share(created).splitlines() == [
        f"imagenet@3 {'ab' * 32}",
        "new version: 1,234 files, 4.5 GB; 12.3 MB newly hashed from 3 files",
    ]
    unchanged = {**created, "created": False, "new_bytes": 0}
    assert render.render_share(unchanged).splitlines()[1].startswith("unchanged since ")


def test_verify_lists_the_problems_and_how_to_repair():
    report = {
        "name": "imagenet",
        "version": VERSION,
        "path": "/data/my imagenet",
        "files_checked": 1234,
        "ok": False,
        "problems": [{"path": "a.jpg", "reason": "missing"}, {"path": "b.jpg", "reason": "content differs"}],
        "problems_total": 3,
        "repair": "to restore it, run: shoal fetch imagenet@3 '/data/my imagenet'",
    }
    assert render.render_verify(report).splitlines() == [
        "imagenet@3 FAILED: 3 problems in 1,234 files",
        "  a.jpg: missing",
        "  b.jpg: content differs",
        "  ... and 1 more",
        "to restore it, run: shoal fetch imagenet@3 '/data/my imagenet'",
    ]


def test_peers_show_names_ids_states_and_addresses():
    peers = {
        "peers": [
            {"name": "bob", "peer_id": "B" * 63, "state": "offline", "address": None, "addresses": ["10.0.0.2:7453"]},
            {"name": None, "peer_id": "C" * 63, "state": "pending", "address": "10.0.0.3:7453", "addresses": []},
        ]
    }
    lines = render.render_peers(peers).splitlines()
    assert lines[0].split() == ["NAME", "PEER", "ID", "STATE", "ADDRESS"]
    assert lines[1].split() == ["bob", "B" * 63, "offline", "10.0.0.2:7453"]
    assert lines[2].split() == ["-", "C" * 63, "pending", "10.0.0.3:7453"]
    assert "shoal trust" in render.render_peers({"peers": []})


def test_status_summarises_the_daemon():
    status = {
        "version": "0.1.0",
        "pid": 42,
        "uptime": 3725.0,
        "peer_id": "P" * 63,
        "home": "/h",
        "listen": "0.0.0.0:7453",
        "discovery": True,
        "datasets": 3,
        "peers": {"trusted": 2, "pending": 1, "online": 0},
    }
    text = render.render_status(status)
    assert "running, pid 42, up 1h02m" in text
    assert "2 trusted (0 online), 1 pending" in text
    assert "0.0.0.0:7453 (discovery on)" in text


def test_fetch_reports_where_the_data_went_and_what_crossed_the_network():
    result = {
        "version": VERSION,
        "dest": "/data/imagenet",
        "files_written": 1200,
        "files_present": 34,
        "files_total": 1234,
        "bytes_total": 4_500_000_000,
        "bytes_received": 2_000_000_000,
        "bytes_reused": 2_500_000_000,
        "seconds": 20.0,
        "peers": {"A": 1, "B": 2},
        "warnings": [],
    }
    assert render.render_fetch(result).splitlines()[1] == (
        "fetched into /data/imagenet: 1,234 files, 4.5 GB (1,200 written, 34 already there); 2.0 GB received"
        " from 2 peers in 20.0s (100.0 MB/s), 2.5 GB reused from local data"
    )


def test_a_fetch_of_part_of_a_version_counts_the_part_and_times_it_to_the_tenth():
    # 3 checkpoints of a 333-file version; 1.93 s is shown as 1.9s, not 1s, so the rate matches it.
    result = {
        "version": {**VERSION, "files": 333, "size": 358_000_000}, "dest": "/data/ckpts",
        "files_written": 3, "files_present": 0, "files_total": 3, "bytes_total": 170_900_000,
        "bytes_received": 170_900_000, "bytes_reused": 0, "seconds": 1.93, "peers": {"A": 1}, "warnings": [],
    }
    assert render.render_fetch(result).splitlines()[1] == (
        "fetched into /data/ckpts: 3 files, 170.9 MB (3 written, 0 already there); 170.9 MB received"
        " from 1 peer in 1.9s (88.5 MB/s), 0 B reused from local data"
    )


def test_subscriptions_show_state_and_every_kept_change():
    following = {
        "name": "imagenet", "dest": "/data/imagenet", "version": VERSION, "state": "current",
        "last_error": None, "retry_in": None,
        "conflicts": [
            {"path": "a.yaml", "change": "edited", "kept_as": "a.yaml.shoal-conflict-4"},
            {"path": "x/mine.txt", "change": "added", "kept_as": "x/mine.txt"},
            {"path": "b.bin", "change": "deleted", "kept_as": None},
        ],
    }
    failing = {**following, "name": "ckpt", "dest": "/data/ckpt", "version": None, "state": "failed",
               "last_error": "no connected peer has ckpt", "retry_in": 8.0, "conflicts": []}
    lines = render.render_subscriptions({"subscriptions": [following, failing]}).splitlines()
    assert lines[1].split() == ["imagenet", f"@{VERSION['seq']}", "current", "3", "/data/imagenet"]
    assert lines[2].split() == ["ckpt", "-", "failed", "0", "/data/ckpt"]
    assert lines[3:] == [
        "imagenet: a.yaml: edited here; your copy is a.yaml.shoal-conflict-4",
        "imagenet: x/mine.txt: added here; left in place",
        "imagenet: b.bin: deleted here; left deleted",
        "ckpt: no connected peer has ckpt (retry in 8s)",
    ]
    assert render.render_subscription_change({"subscription": failing}, "following") == (
        "following ckpt into /data/ckpt: holds nothing yet; the last update failed: no connected peer has ckpt"
    )


def test_config_shows_limits_in_words():
    values = {"bandwidth.global_limit": 0, "bandwidth.per_peer_limit": 5_000_000, "discovery": False}
    text = render.render_config(values)
    assert text.splitlines() == [
        "bandwidth.global_limit = 0 (unlimited)",
        "bandwidth.per_peer_limit = 5000000 (5.0 MB/s)",
        "discovery = false",
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_a_line_per_interval_at_most():
    clock = FakeClock()
    out = io.StringIO()
    view = PlainProgress("sharing x", out, interval=2.0, clock=clock)
    for step in range(1, 11):
        clock.now += 0.5
        view.update({"files_done": step, "bytes_done": step * 1_000_000, "files_total": 10, "bytes_total": 10_000_000})
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == "sharing x: 4/10 files, 4.0 MB of 10.0 MB, 2.0 MB/s, ETA 3s"


def test_a_fetch_shows_the_daemons_rate_and_eta_and_no_rate_while_it_waits_for_a_peer():
    fetch = {"files_done": 2, "bytes_done": 4_000_000, "files_total": 4, "bytes_total": 8_000_000,
             "rate": 1_000_000, "eta": 4.0, "waiting": None}
    # The daemon's rate is of bytes from peers; an average over files already here would overstate it.
    assert describe(fetch, 0.5) == "2/4 files, 4.0 MB of 8.0 MB, 1.0 MB/s, ETA 4s"
    clock = FakeClock()
    out = io.StringIO()
    view = PlainProgress("fetching ds", out, interval=2.0, clock=clock)
    waiting = "waiting for a peer that has ds@1 (gpu-box is offline since 10:42)"
    for step in range(10):
        clock.now += 0.5
        view.update({**fetch, "rate": 0, "eta": None, "waiting": waiting})
        if step == 2:
            assert out.getvalue() == "", "a fetch that fails within the first interval prints its error alone"
    assert out.getvalue().splitlines() == [waiting]
    # A report without the wait between two with it (the peer redialled and was lost again) is no news.
    clock.now += 0.5
    view.update(fetch)
    clock.now += 0.5
    view.update({**fetch, "rate": 0, "eta": None, "waiting": waiting})
    assert out.getvalue().splitlines() == [waiting]


def test_progress_without_totals_shows_counts_and_rate_only():
    assert describe({"files_done": 5, "bytes_done": 3000, "files_total": None, "bytes_total": None}, 1.5) == (
        "5 files, 3.0 kB, 2.0 kB/s"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_bar_and_a_pipe_plain_lines():
    assert isinstance(open_progress("x", stream=io.StringIO()), PlainProgress)
    terminal = Terminal()
    view = open_progress("sharing imagenet", stream=terminal)
    assert isinstance(view, RichProgress)
    view.update({"files_done": 1, "bytes_done": 500, "files_total": 2, "bytes_total": 1000, "path": "a"})
    time.sleep(0.15)
    view.close()
    assert "sharing imagenet" in terminal.getvalue()


def test_the_live_bar_of_a_fetch_waiting_for_a_peer_says_why_and_shows_no_rate():
    terminal = Terminal()
    view = RichProgress("fetching ds", terminal)
    view._started -= PLAIN_INTERVAL  # a wait is said once the first interval has passed
    fetch = {"files_done": 1, "bytes_done": 500, "files_total": 2, "bytes_total": 1000, "rate": 0, "eta": None}
    waiting = "waiting for a peer that has ds@1 (gpu-box is offline since 10:42)"
    for _ in range(3):
        view.update({**fetch, "waiting": waiting})
    view.close()
    shown = terminal.getvalue()
    assert shown.count(waiting) == 1 and "/s" not in shown


def test_log_shows_author_and_change_columns_with_unknowns_as_question_marks():
    known = VERSION | {"author_peer": "5VQOWZU", "author_name": "gpu-box", "files_changed": 12, "bytes_new": 3_000_000}
    unknown = VERSION | {
        "seq": 2, "author_peer": "5VQOWZU", "author_name": None, "files_changed": None, "bytes_new": None
    }
    lines = render.render_log({"name": "imagenet", "versions": [known, unknown]}).splitlines()
    assert lines[0].split() == ["VERSION", "ID", "TIME", "AUTHOR", "SIZE", "FILES", "CHANGED", "NEW", "KEPT", "MESSAGE"]
    assert "gpu-box" in lines[1] and "3.0 MB" in lines[1] and " 12 " in lines[1]
    assert "5VQOWZU" in lines[2] and lines[2].count(" ? ") == 2


def test_log_marks_a_subset_change_without_data_columns_and_counts_it_apart():
    data = VERSION | {"seq": 1, "kind": "data", "files_changed": 12, "bytes_new": 3_000_000, "kept": True}
    subsets = VERSION | {
        "seq": 2, "kind": "subsets", "subsets_changed": {"tenth": "defined"}, "files_changed": 0, "bytes_new": 0,
        "message": "subset tenth defined: 10% of 333 files, 33 drawn",
    }
    lines = render.render_log({"name": "imagenet", "versions": [subsets, data]}).splitlines()
    assert lines[1].split()[4:] == ["subsets", "subset", "tenth", "defined:", "10%", "of", "333", "files,", "33", "drawn"]
    assert "3.0 MB" in lines[2] and "yes" in lines[2]
    assert lines[-1] == "1 data version, 1 subset change"


def test_subsets_show_an_exact_share_and_a_per_file_one_as_approximate():
    version = VERSION | {"message": "subset tenth defined: 10% of 333 files, 33 drawn"}
    subsets = {
        "tenth": {"include": [], "sample": 0.1, "seed": 0, "draw": "exact"},
        "old": {"include": ["data/*"], "sample": 0.125, "seed": 7, "draw": "per-file"},
        "small": {"include": ["data/*"], "sample": 1.0, "seed": 0, "draw": "all"},
    }
    text = render.render_subsets({"name": "imagenet", "version": version, "subsets": subsets, "changed": True})
    lines = text.splitlines()
    assert lines[1] == "subset tenth defined: 10% of 333 files, 33 drawn"
    rows = {line.split()[0]: line for line in lines[3:]}
    assert "~12.5% per file" in rows["old"] and " 10% " in rows["tenth"] and " 100% " in rows["small"]
    assert "defined" not in render.render_subsets({"name": "imagenet", "version": version, "subsets": subsets})


def test_diff_lists_marks_then_a_summary_and_says_how_many_were_left_out():
    diff = {
        "from": VERSION | {"seq": 1}, "to": VERSION, "total": 5,
        "counts": {"added": 3, "removed": 1, "modified": 1, "type": 0},
        "changes": [{"path": "a", "change": "added", "size": 1}, {"path": "b", "change": "removed", "size": 0}],
        "bytes_changed": 2_000, "bytes_to_fetch": 1_000,
    }
    lines = render.render_diff(diff).splitlines()
    assert lines[:3] == ["+ a", "- b", "… and 3 more"]
    assert lines[3] == (
        "imagenet@1 → imagenet@3: 3 added, 1 removed, 1 modified; 1.0 kB to fetch (2.0 kB in changed files)"
    )


def test_remote_listing_says_how_many_more_peers_offer():
    entry = {"name": "imagenet", "head": VERSION, "peer_name": "gpu-box", "peer_id": "A" * 63}
    lines = render.render_remote_datasets({"datasets": [entry], "total": 100_001}).splitlines()
    assert lines[1].split()[0] == "imagenet" and lines[1].split()[-1] == "gpu-box"
    assert lines[-1] == "... and 100,000 more; `shoal ls --remote --limit N` shows more"
    assert len(render.render_remote_datasets({"datasets": [entry], "total": 1}).splitlines()) == 2


def test_local_listing_shows_each_checkout_and_a_missing_folder():
    info = {
        "name": "imagenet", "head": VERSION, "path": "/data/imagenet", "audience": None, "present": False,
        "checkouts": [
            {"path": "/data/imagenet", "version": VERSION, "whole": True},
            {"path": "/repo/data", "version": VERSION | {"seq": 1}, "whole": False},
        ],
    }
    lines = render.render_datasets({"datasets": [info]}).splitlines()
    assert lines[1].endswith("/data/imagenet (missing: fetch or share it again)")
    assert lines[2].split() == ["@1", "(part)", "/repo/data"]
    assert len(lines) == 3


def test_pin_says_when_it_added_the_folder_to_gitignore() -> None:
    pin = {"name": "ds", "version": "ab" * 32, "path": "data"}
    assert "gitignore" not in render.render_pin({"lock": "/r/shoal.lock", "pin": pin, "gitignore": None})
    added = render.render_pin({"lock": "/r/shoal.lock", "pin": pin, "gitignore": "/r/.gitignore"})
    assert added.splitlines()[1].startswith("added /data/ to /r/.gitignore")
