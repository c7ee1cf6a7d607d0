"""The application side of the migration: the write path the billing application calls, and its queue consumers."""
