"""What a session leaves: run records, tables, the report and its plots."""
