"""The dashboard: pages the Master serves at `/` (docs/dashboard.md)."""
