"""The two stores and their access: connections, schemas, the write gate, the run ledger, the S3 layout."""
