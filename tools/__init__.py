"""Developer tools (not imported by the server)."""
