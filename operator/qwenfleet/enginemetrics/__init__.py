"""vLLM's /metrics as qwenfleet reads it: one pure parser (`parse`) and one scraper (`scrape`) that the autoscaler,
the cost loop and the router's discovery share."""
