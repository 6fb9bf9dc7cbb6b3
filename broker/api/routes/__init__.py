"""The API's routes, one module per resource; each exposes a FastAPI ``router``."""
