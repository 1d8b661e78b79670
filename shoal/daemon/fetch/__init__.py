"""Fetching a version from peers into a folder.

`engine.Fetcher` is the entry point. It resolves the version (`resolve`), walks
its manifest (`objects`, `walk`), then runs the data phase as stages joined by
memory channels: `plan` (what DEST lacks) → `copier` (chunks found here) →
`puller` (chunks from peers, as the I/O-free `schedule` decides) → `writer`
(verify, write, install) → `record` (the index); the stages after `plan`
(`stages`) run in the daemon, or in worker processes that `split` deals the
planned files to (`link` is what they tell each other). `browse` lists a version's
folder without fetching it; `manager` runs fetches for the control API.
"""
