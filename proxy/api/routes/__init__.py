"""Route modules; they are included in exactly one place, `proxy.api.router`."""
