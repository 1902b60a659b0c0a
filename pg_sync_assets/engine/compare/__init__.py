"""Compare: which keys differ between the two servers (the differential path, localization)."""
