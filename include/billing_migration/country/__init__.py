"""One country's migration: export, transform, load, compare, re-migrate; the run pipeline and its report."""
