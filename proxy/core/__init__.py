"""Settings, security, database and errors: what every route builds on."""
