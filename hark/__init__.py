"""Hark: a real-time voice-assistant server.

The subpackages live at the repository's top level (`protocol/`, `server/`, `client/`, `loadtest/`)
and are linked in here, so the installed names are `hark.protocol`, `hark.server`, `hark.client` and
`hark.loadtest`, and nothing generic lands at the top of site-packages.
"""
