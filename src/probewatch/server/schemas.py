"""Request bodies, validated by pydantic (so FastAPI also publishes them in the OpenAPI schema)."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Steering(BaseModel):
    vector: str = Field(description="name of a steering vector served by this server")
    strength: float = Field(description="multiplier of the vector")

    @field_validator("strength")
    @classmethod
    def finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("strength must be a finite number")
        return value


class ChatRequest(BaseModel):
    # OpenAI clients send fields we do not use (top_p, n, user, ...): ignore, don't fail.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    seed: int | None = None
    probes: list[str] | None = Field(
        default=None, description="probes to report (default: all loaded probes)"
    )
    steering: Steering | None = None
