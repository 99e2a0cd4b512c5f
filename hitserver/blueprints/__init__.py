"""The three faces of the server: `api` (JSON), `worker` (task pages), `admin`."""
