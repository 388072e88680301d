"""Learning from traces: adapter registry (more in issue 5: data engine, SFT, ReGRPO, hot-swap)."""
