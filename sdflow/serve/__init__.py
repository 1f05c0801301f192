"""`sdflow serve`: a warm server with a persistent SQLite job queue and a JSON HTTP API."""
