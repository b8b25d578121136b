"""Report templates and assets (installed as devicelab.reports); the renderer is devicelab/report.py."""
