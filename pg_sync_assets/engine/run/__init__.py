"""Run: one table's or one group's run from lock to commit, its stages, timer and progress."""
