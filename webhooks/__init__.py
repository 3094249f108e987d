"""Registry and CI webhooks turned into Prefect events (issue #5)."""
