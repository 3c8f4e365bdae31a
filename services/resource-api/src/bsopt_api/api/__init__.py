"""HTTP and WebSocket surface: pydantic schemas, dependencies, one router per resource."""
