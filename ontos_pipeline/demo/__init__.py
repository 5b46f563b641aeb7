"""The `ontos demo` loop: runs, traffic, the daemon and the improve phase."""
