"""The IR: graph records and path-lifting coordinates."""
