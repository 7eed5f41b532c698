"""SageMaker Pipelines: on AWS, and its processing containers on a local engine."""
