"""DATA: source tables and the validated, versioned sheet snapshot with its checks."""
