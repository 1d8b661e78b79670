"""Modal dialogs: each returns the request parameters to send, or None when cancelled."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

Params = dict[str, Any]


class _Dialog(ModalScreen[Params | None]):
    """Escape cancels, Enter in any input confirms."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.confirm()
        else:
            self.dismiss(None)

    def buttons(self, ok: str, cancel: str = "Cancel") -> Horizontal:
        return Horizontal(Button(ok, id="ok", variant="primary"), Button(cancel, id="cancel"), classes="buttons")

    def confirm(self) -> None:
        raise NotImplementedError


class FetchDialog(_Dialog):
    """`include` pre-fills the glob (a subset picked while browsing); `version` pins the version fetched."""

    def __init__(self, name: str, default_dest: str, *, include: str = "", version: str | None = None) -> None:
        super().__init__()
        self._name = name
        self._default_dest = default_dest
        self._include = include
        self._version = version

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            pinned = f" version {self._version[:16]}" if self._version else ""
            yield Label(f"Fetch [b]{self._name}[/b]{pinned}")
            yield Label("Destination folder")
            yield Input(self._default_dest, id="dest")
            yield Label("Only paths matching (optional glob, e.g. train/*.parquet)")
            yield Input(self._include, id="include", placeholder="everything")
            yield self.buttons("Fetch")

    def confirm(self) -> None:
        dest = self.query_one("#dest", Input).value.strip()
        if not dest:
            self.notify("a destination is required", severity="error")
            return
        params: Params = {"name": self._name, "dest": dest}
        if self._version is not None:
            params["version"] = self._version
        include = self.query_one("#include", Input).value.strip()
        if include:
            params["include"] = [include]
        self.dismiss(params)


class TrustDialog(_Dialog):
    """Shows the whole id: trust is only safe once it matches what the other side's `shoal id` prints."""

    def __init__(self, peer: dict[str, Any]) -> None:
        super().__init__()
        self._peer = peer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Trust this peer? Compare the id with `shoal id` on its machine:")
            yield Static(self._peer["peer_id"], classes="peer-id")
            yield Label("Name (optional)")
            yield Input(self._peer.get("name") or "", id="name")
            yield self.buttons("Trust")

    def confirm(self) -> None:
        params: Params = {"peer_id": self._peer["peer_id"]}
        name = self.query_one("#name", Input).value.strip()
        if name:
            params["name"] = name
        # No address: the daemon keeps what the peer announced, never where a connection came from.
        self.dismiss(params)


class UntrustDialog(_Dialog):
    def __init__(self, peer: dict[str, Any]) -> None:
        super().__init__()
        self._peer = peer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Stop trusting [b]{self._peer.get('name') or 'this peer'}[/b]?")
            yield Static(self._peer["peer_id"], classes="peer-id")
            yield self.buttons("Untrust")

    def confirm(self) -> None:
        self.dismiss({"peer_id": self._peer["peer_id"]})


class _FolderDialog(_Dialog):
    """A folder (absolute path) and optional text fields; the subclasses say which and what for."""

    HEADING = ""
    OK = ""
    #: (param, label) of each optional field, sent only when filled in.
    OPTIONAL: tuple[tuple[str, str], ...] = ()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.HEADING)
            yield Label("Folder (absolute path)")
            yield Input(id="path", placeholder="/data/imagenet-subset")
            for field, label in self.OPTIONAL:
                yield Label(label)
                yield Input(id=field)
            yield self.buttons(self.OK)

    def confirm(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if not path.startswith("/"):
            self.notify("the folder must be an absolute path", severity="error")
            return
        params: Params = {"path": path}
        for field, _ in self.OPTIONAL:
            value = self.query_one(f"#{field}", Input).value.strip()
            if value:
                params[field] = value
        self.dismiss(params)


class ShareDialog(_FolderDialog):
    HEADING = "Share a folder"
    OK = "Share"
    OPTIONAL = (("name", "Dataset name (optional; defaults to the folder name)"), ("message", "Message (optional)"))


class WatchDialog(_FolderDialog):
    HEADING = "Watch a folder: share it now, and again whenever its changes settle"
    OK = "Watch"
    OPTIONAL = (("name", "Dataset name (optional; defaults to the folder name)"),)


class SubscribeDialog(_Dialog):
    """A dataset and the folder that follows its newest version; the daemon needs the folder absolute."""

    def __init__(self, name: str, default_dest: str) -> None:
        super().__init__()
        self._name = name
        self._default_dest = default_dest

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Subscribe: keep a folder at a dataset's newest version")
            yield Label("Dataset name")
            yield Input(self._name, id="name", placeholder="imagenet-subset")
            yield Label("Destination folder (absolute path)")
            yield Input(self._default_dest, id="dest", placeholder="/data/imagenet-subset")
            yield self.buttons("Subscribe")

    def confirm(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        dest = self.query_one("#dest", Input).value.strip()
        if not name:
            self.notify("a dataset name is required", severity="error")
        elif not dest.startswith("/"):
            self.notify("the destination must be an absolute path", severity="error")
        else:
            self.dismiss({"name": name, "dest": dest})


class ConfirmDialog(_Dialog):
    """A yes/no question whose yes sends `params`; the keys are the buttons' too: y for yes, n or escape for no."""

    BINDINGS = [Binding("escape,n", "cancel", "No"), Binding("y", "confirm", "Yes")]

    def __init__(self, question: str, note: str, yes: str, no: str, params: Params) -> None:
        super().__init__()
        self._question = question
        self._note = note
        self._yes = yes
        self._no = no
        self._params = params

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Label(self._question)
            yield Label(self._note)
            yield self.buttons(self._yes, self._no)

    def action_confirm(self) -> None:
        self.confirm()

    def confirm(self) -> None:
        self.dismiss(self._params)


class CancelTransferDialog(ConfirmDialog):
    def __init__(self, transfer_id: int, name: str) -> None:
        super().__init__(
            f"Cancel the fetch of [b]{name}[/b]?",
            "Verified files stay; fetching it again resumes from them.",
            "Cancel fetch", "Keep fetching", {"id": transfer_id},
        )
