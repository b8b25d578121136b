"""Per-op profiles and timelines (docs/results.md: ext.profile, ext.timeline)."""
