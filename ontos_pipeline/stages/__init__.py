"""Stage logic as plain, typed functions (no Dagster): data, generate, label, train, deploy, monitor, improve."""
