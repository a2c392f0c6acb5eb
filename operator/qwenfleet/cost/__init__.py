"""Cost truth: measured GPU time and tokens per deployment and router (ledger is pure, loop is the shell)."""
