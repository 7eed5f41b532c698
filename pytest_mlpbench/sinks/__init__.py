"""Where results go beside the JSON: OpenTelemetry, an OTLP file, MLflow."""
