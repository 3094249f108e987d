"""Registry and CI webhooks turned into Prefect events (docs/webhooks.md)."""
