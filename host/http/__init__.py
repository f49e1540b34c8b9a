"""The HTTP API: the only package that imports FastAPI and turns host errors into status codes.

- `app`: the app factory (`create_app`) and its lifespan;
- `routes_functions`, `routes_audit`, `routes_operations`: the routes, one router a family;
- `deps`: the host and the verified subject, as dependencies;
- `errors`: host errors to status codes and error bodies;
- `middleware`: request ids, the body cap, one log line a request;
- `schemas`: the request and response models;
- `logs`: the JSON-lines log format.

Calls the service and the composition root; never called back by them.
"""
