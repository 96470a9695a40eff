"""Generation engines other than our own HF decode loop (serving layer: they may use probes,
artifacts and scoring code, never the training stack). `engines.vllm` runs the probes inside
vLLM; see docs/vllm.md."""
