"""The audit log: one row per request, written off the request path, never lost to an outage."""
