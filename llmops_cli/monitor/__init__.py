"""`llmops monitor`: health, quality and drift per model version from the server's logs; alert rules,
Prometheus / Grafana export, a live dashboard, an HTML report, and the export of bad interactions to prep."""
