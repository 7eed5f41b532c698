"""Where a workload is defined: workloads, steps, run specs and the shape of their DAG."""
