"""Rule data files shipped with the detectors (package data)."""
