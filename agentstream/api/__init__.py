"""The HTTP API: LangGraph Server's routes, bodies, status codes and SSE framing."""
