"""Verify: proof that the target holds what the source holds (checksums, the record of
bucket sums, the check inside the final transaction)."""
