"""The control socket: the server local clients connect to, and the API methods it
dispatches to (`api/`, one module per area)."""
