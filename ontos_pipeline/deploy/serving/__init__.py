"""The local serving process: HTTP app, model registry watch, request payloads, inference log."""
