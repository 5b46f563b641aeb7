"""DEPLOY: serving endpoints (the champion alias, history, rollback) and the local serving process."""
