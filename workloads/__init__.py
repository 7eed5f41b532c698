"""The workloads of the reference study, defined once in plain Python."""
