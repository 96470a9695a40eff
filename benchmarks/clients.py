"""Streaming chat clients for any OpenAI-compatible server (ours or vLLM): httpx only, so the
same code measures both."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    tokens: int = 0
    first_token_s: float | None = None  # time to first token
    gaps_s: list[float] = field(default_factory=list)  # between consecutive tokens


def stream_one(url: str, model: str, prompt: str, max_tokens: int) -> StreamResult:
    """One streaming request; every chunk with content counts as one token."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }
    result = StreamResult()
    start = last = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if not (choices[0].get("delta") or {}).get("content"):
                continue
            now = time.perf_counter()
            if result.first_token_s is None:
                result.first_token_s = now - start
            else:
                result.gaps_s.append(now - last)
            last, result.tokens = now, result.tokens + 1
    return result


def concurrent(url: str, model: str, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    """All prompts at once, one thread each; aggregate tokens/s over the wall time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda p: stream_one(url, model, p, max_tokens), prompts))
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "tokens": sum(r.tokens for r in results),
        "first_token_s": [r.first_token_s for r in results],
        "gaps_s": [g for r in results for g in r.gaps_s],
    }


def wait_healthy(url: str, timeout_s: float, path: str = "/health") -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
