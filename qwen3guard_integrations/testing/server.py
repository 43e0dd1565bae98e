"""A real HTTP server on loopback that serves a Gen checkpoint the way TGI and vLLM do.

`GenTestServer` speaks TGI's ``/generate`` (and ``POST /``), ``/info`` and ``/health`` with
TGI's error bodies, and the OpenAI-compatible ``/v1/completions`` and ``/v1/models`` routes, as
SPEC section 4 describes them. Behind the routes a real ``transformers`` model does real greedy
decoding (sampling when asked to), with per-token log-probabilities and top-n tokens.

It can fail on purpose: `GenTestServer.inject` queues `Fault` s (a status with an
error body, a ``Retry-After``, a delay, a body that is not JSON, a well-formed answer whose text is
not a verdict, a dropped connection); `GenTestServer.stop` takes it down (connection refused)
and `GenTestServer.start` brings it back on the same port; ``ready = False`` makes
``/health`` answer 503.

Like TGI 3 it caches prefixes: a request that starts with the ids of the one before (the
template's preamble; the forced-prefix steps of one check) only runs its new ids through the
model (``prefix_cache=False`` prefills every request in full).

Used by this package's tests; usable by yours::

    with GenTestServer(gen_checkpoint_path) as server:
        guard = Qwen3Guard.from_tgi(server.url, tokenizer=gen_checkpoint_path)
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from ..backends.gen.forced import crop_cache, shared_prefix
from ..backends.loading import cache_keyword
from ..core.deps import require
from .loopback import Fault, Handler, LoopbackServer, Reply, bad_request, invalid, read_json

__all__ = ["Fault", "GenTestServer"]

_CACHED_DECODES = 64  # prefix-cache entries (about 2 MB each on the tiny Gen)
_GENERATE_ROUTES = ("/generate", "/", "/v1/completions")


class GenTestServer:
    """See the module docstring. ``model`` is a Gen checkpoint folder (or Hub id, if cached)."""

    def __init__(
        self,
        model: str | Path,
        *,
        model_id: str = "qwen3guard-gen-test",
        host: str = "127.0.0.1",
        port: int = 0,
        max_input_tokens: int = 4095,
        max_total_tokens: int = 4159,
        max_top_n_tokens: int = 5,
        max_client_batch_size: int | None = 4,
        device: str = "cpu",
        prefix_cache: bool = True,
    ) -> None:
        torch = require("torch")
        transformers = require("transformers")
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model))
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(model)).to(device).eval()
        self.device = device
        self.model_id = model_id
        self.host, self.port = host, port
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_top_n_tokens = max_top_n_tokens
        self.max_client_batch_size = max_client_batch_size
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
        self.ready = True
        self.prefix_cache = prefix_cache
        # the KV caches of the last few decodes, most recent last: [ids fed, cache]
        self._caches: list[tuple[list[int], Any]] = []
        self.ids_run = 0  # prompt ids run through the model (cached prefixes not counted)
        self.requests: Counter[str] = Counter()
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()  # one generation at a time, like one GPU
        self._state = threading.Lock()
        self._conns: set[Any] = set()
        self._httpd: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The TGI base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return self.url + "/v1"

    def start(self) -> GenTestServer:
        """Listen (again, on the same port after `stop`)."""
        if self._httpd is not None:
            return self
        handler = type("Handler", (Handler,), {"server_ref": self})
        httpd = LoopbackServer((self.host, self.port), handler)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop listening (new connections are refused) and cut open keep-alive ones."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._state:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, conn: Any, open_: bool) -> None:
        with self._state:
            (self._conns.add if open_ else self._conns.discard)(conn)

    def __enter__(self) -> GenTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` generation requests (either protocol)."""
        with self._state:
            self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        """Drop the faults not yet used."""
        with self._state:
            self._faults.clear()

    def _next_fault(self) -> Fault | None:
        with self._state:
            return self._faults.popleft() if self._faults else None

    # --- the model -----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """TGI's ``/info`` document."""
        return {
            "model_id": self.model_id,
            "model_dtype": "torch.float32",
            "model_device_type": self.device,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "max_best_of": 2,
            "max_stop_sequences": 4,
            "max_client_batch_size": self.max_client_batch_size,
            "validation_workers": 2,
            "version": "3.3.4-test",
            "router": "text-generation-router",
        }

    def generate(
        self, ids: list[int], *, max_new_tokens: int, top_n: int, sample: bool, seed: int | None
    ) -> dict[str, Any]:
        """Decode from ``ids``; each step's chosen token with its log-probability and the top-n."""
        torch = self.torch
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            cache = self._reuse(ids)
            self.ids_run += len(ids) - (0 if cache is None else int(cache.get_seq_length()))
            # the cache is out of the pool while it is written: a decode that fails drops it
            out = self._decode(ids, cache, max_new_tokens, sample)
            new = [int(t) for t in out.sequences[0, len(ids) :]]
            if cache is not None:  # it now holds every id fed to the model
                self._caches.append(((ids + new)[: int(cache.get_seq_length())], cache))
        steps = []
        for t, score in zip(new, out.scores):
            logp = score[0].float().log_softmax(-1)
            top = logp.topk(top_n) if top_n else None
            tops = [] if top is None else list(zip(top.indices.tolist(), top.values.tolist()))
            steps.append((t, float(logp[t]), tops))
        finished = bool(new) and new[-1] in self.eos_ids
        text_ids = new[:-1] if finished else new
        return {
            "steps": steps,
            "text": self.tokenizer.decode(text_ids, skip_special_tokens=True),
            "finish": "eos" if finished else "length",
        }

    def _decode(self, ids: list[int], cache: Any, max_new_tokens: int, sample: bool) -> Any:
        torch = self.torch
        return self.model.generate(
            torch.tensor([ids], device=self.device),
            **({cache_keyword(): cache} if cache is not None else {}),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=self.device),
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=None,
            top_p=None,
            top_k=None,
            output_scores=True,
            return_dict_in_generate=True,
            eos_token_id=self.eos_ids,
            pad_token_id=self.eos_ids[0],
        )

    def _reuse(self, ids: list[int]) -> Any:
        """The cached decode that shares the longest prefix with ``ids``, cut back to it (one
        id at least is left to run, for the next token's logits) and taken out of the pool; a
        fresh cache when none shares anything; None when prefix caching is off. Called under
        the generation lock."""
        if not self.prefix_cache:
            return None
        shared = [shared_prefix(cached, ids[:-1]) for cached, _ in self._caches]
        best = max(range(len(shared)), key=shared.__getitem__, default=None)
        if best is None or shared[best] == 0:
            del self._caches[: max(0, len(self._caches) - _CACHED_DECODES + 1)]
            return require("transformers").DynamicCache(config=self.model.config)
        _, cache = self._caches.pop(best)
        crop_cache(cache, shared[best])
        return cache

    def _piece(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    # --- routes --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        """Route one request; returns (status, JSON body or bytes, headers)."""
        self.requests[path] += 1
        try:
            if method == "GET" and path == "/health":
                return (200, b"", {}) if self.ready else (503, b"", {})
            if method == "GET" and path == "/info":
                return 200, self.info(), {}
            if method == "GET" and path == "/v1/models":
                return 200, self._models(), {}
            if method == "POST" and path in _GENERATE_ROUTES:
                openai = path.startswith("/v1")
                fault = self._next_fault()
                if fault is not None:
                    self._apply(fault, openai)
                data = read_json(body, openai)
                if openai:
                    return 200, self._completions(data, fault), {}
                return 200, self._tgi_generate(data, fault), {}
            raise Reply(404, {"error": f"no route {method} {path}", "error_type": "not_found"})
        except Reply as reply:
            return reply.status, reply.body, reply.headers

    def _apply(self, fault: Fault, openai: bool) -> None:
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.drop:
            raise ConnectionAbortedError("injected: connection dropped")
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        if fault.status is not None:
            body: Any = fault.body
            if body is None:
                body = (
                    {
                        "object": "error",
                        "message": fault.error,
                        "type": fault.error_type,
                        "code": fault.status,
                    }
                    if openai
                    else {"error": fault.error, "error_type": fault.error_type}
                )
            raise Reply(fault.status, body, headers)
        if fault.body is not None:
            raise Reply(200, fault.body, headers)

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_id,
                    "object": "model",
                    "owned_by": "qwen3guard-test",
                    "max_model_len": self.max_total_tokens,
                }
            ],
        }

    def _tgi_generate(self, data: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        inputs = data.get("inputs")
        params = data.get("parameters") or {}
        if not isinstance(inputs, str) or not inputs:
            raise invalid("`inputs` must be a non-empty string")
        if not isinstance(params, dict):
            raise invalid("`parameters` must be an object")
        top_n = params.get("top_n_tokens") or 0
        if not isinstance(top_n, int) or not 0 <= top_n <= self.max_top_n_tokens:
            raise invalid(
                f"`top_n_tokens` must be >= 0 and <= {self.max_top_n_tokens}. Given: {top_n}"
            )
        max_new = params.get("max_new_tokens") or 100
        ids = list(self.tokenizer(inputs)["input_ids"])
        self._check_length(len(ids), max_new, "inputs", "max_new_tokens")
        gen = self.generate(
            ids,
            max_new_tokens=max_new,
            top_n=top_n,
            sample=bool(params.get("do_sample")),
            seed=params.get("seed"),
        )
        text = gen["text"] if fault is None or fault.text is None else fault.text
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            special = set(self.tokenizer.all_special_ids)
            out["details"] = {
                "finish_reason": "eos_token" if gen["finish"] == "eos" else "length",
                "generated_tokens": len(gen["steps"]),
                "seed": params.get("seed"),
                "prefill": [],
                "tokens": [
                    {"id": t, "text": self._piece(t), "logprob": lp, "special": t in special}
                    for t, lp, _ in gen["steps"]
                ],
                "top_tokens": [
                    [
                        {"id": i, "text": self._piece(i), "logprob": v, "special": i in special}
                        for i, v in tops
                    ]
                    for _, _, tops in gen["steps"]
                ]
                if top_n
                else None,
            }
        return out

    def _completions(self, data: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        if data.get("model") != self.model_id:
            raise Reply(
                404,
                {
                    "object": "error",
                    "type": "NotFoundError",
                    "code": 404,
                    "message": f"The model `{data.get('model')}` does not exist.",
                },
            )
        prompt = data.get("prompt")
        if isinstance(prompt, str) and prompt:
            ids = list(self.tokenizer(prompt)["input_ids"])
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt)
        ):
            ids = prompt
            if max(ids) >= len(self.tokenizer) or min(ids) < 0:
                raise bad_request("prompt token ids out of vocabulary")
        else:
            raise bad_request("prompt must be a non-empty string or a list of token ids")
        max_new = data.get("max_tokens") or 16
        self._check_length(len(ids), max_new, "prompt", "max_tokens", openai=True)
        k = data.get("logprobs") or 0
        temperature = data.get("temperature", 1.0)
        gen = self.generate(
            ids, max_new_tokens=max_new, top_n=k, sample=bool(temperature), seed=data.get("seed")
        )
        text = gen["text"] if fault is None or fault.text is None else fault.text
        logprobs = None
        if k:
            steps = [s for s in gen["steps"] if s[0] not in self.eos_ids]
            logprobs = {
                "tokens": [self._piece(t) for t, _, _ in steps],
                "token_logprobs": [lp for _, lp, _ in steps],
                "top_logprobs": [{self._piece(i): v for i, v in tops} for _, _, tops in steps],
                "text_offset": [],
            }
        return {
            "id": f"cmpl-{self.requests['/v1/completions']}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": logprobs,
                    "finish_reason": "stop" if gen["finish"] == "eos" else "length",
                }
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(gen["steps"]),
                "total_tokens": len(ids) + len(gen["steps"]),
            },
        }

    def _check_length(
        self, n: int, max_new: Any, what: str, new_name: str, openai: bool = False
    ) -> None:
        if not isinstance(max_new, int) or max_new < 1:
            raise (bad_request if openai else invalid)(f"`{new_name}` must be strictly positive")
        if n > self.max_input_tokens or n + max_new > self.max_total_tokens:
            msg = (
                f"`{what}` tokens + `{new_name}` must be <= {self.max_total_tokens}. "
                f"Given: {n} `{what}` tokens and {max_new} `{new_name}`"
            )
            raise (bad_request if openai else invalid)(msg)
