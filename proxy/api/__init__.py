"""HTTP and WebSocket routes, and the dependencies they share."""
