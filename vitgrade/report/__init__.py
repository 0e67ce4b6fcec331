"""Score reports: the pydantic models and their exporters."""
