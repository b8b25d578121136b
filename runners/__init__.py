"""What executes on the target (installed as devicelab.runners): small, dependency-light programs that
speak the runner protocol v1 (design.md). The controller owns the stopping rule; runners only time."""
