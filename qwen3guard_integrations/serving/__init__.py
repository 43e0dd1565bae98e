"""The guard as a service: the ASGI server, its limits and metrics (extra ``serve``).

```python
from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard
from qwen3guard_integrations.serving import create_app, serve

app = create_app(Qwen3Guard.from_pretrained(gen), Qwen3StreamGuard.from_pretrained(stream))
serve(app, host="127.0.0.1", port=8000)       # or: qwen3guard serve --gen-model ... --stream-model ...
```

Clients: ``Qwen3Guard.from_server(url)`` and ``Qwen3StreamGuard.from_server(url)``. The Ray Serve
deployment is `qwen3guard_integrations.serving.ray` (extra ``ray``).
"""

from __future__ import annotations

from .app import ServerState, create_app
from .limits import ServerLimits
from .metrics import Metrics
from .server import build_app, serve

__all__ = ["Metrics", "ServerLimits", "ServerState", "build_app", "create_app", "serve"]
