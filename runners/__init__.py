"""What executes on the target (installed as devicelab.runners): small, dependency-light programs that
speak the runner protocol (docs/runner-protocol.md). The controller owns the stopping rule; runners only time."""
