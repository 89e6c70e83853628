"""`swarm web`: the live board in a browser and an HTTP API for agents without Redis access.

`auth` (role tokens), `query` (what the pages read), `live` (board events fanned out to browsers),
`api` (the JSON routes), `app` (the ASGI app that puts them together). Kept light on purpose:
importing `swarm.web.auth` (for `swarm web token`) must not import the web framework.
"""
