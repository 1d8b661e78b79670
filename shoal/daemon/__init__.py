"""All I/O: the daemon. Data flows one way: files → library → store → net → peer.

Module map (each subpackage's __init__ says what it holds):

- `main`: run the daemon in this process (single-instance lock, signals); `service`: the
  root nursery that starts every part; `compose`: builds every part and joins them.
- `config`, `toml_file`: settings in HOME/config.toml (and the live `Settings`) and the
  atomic writes of state files.
- `model`: names and records several parts share (`VersionInfo`, `VersionQuery`, the partial-file folder).
- `store/`: the chunk index (SQLite, WAL), the pack store, reading verified chunks out of
  files, the descriptor pool, syncfs.
- `library/`: scanning shared folders into signed versions, history, audiences, retention.
- `net/`: the identity key, trust, discovery (mDNS), peer sessions, bandwidth caps.
- `fetch/`: resolving, walking and planning a fetch, moving chunks, installing files.
- `watch/`: watched folders shared again once quiet; `sync/`: subscriptions.
- `control/`: the control socket server and the API methods it dispatches to.
"""
