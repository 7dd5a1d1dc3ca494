"""`mirage-lsd-v1`, the built-in small causal live-stream diffusion model.

    config.py            sizes (frozen dataclass, saved in the weight file)
    network.py           the denoiser and the guided upsampler (one nn.Module file)
    sampler.py           few-step shortcut sampling, pure functions
    cache.py             per-stream state: bounded temporal KV cache, previous output
    flow.py              OpenCV optical flow on input frames, warping
    prompt_embedding.py  all-MiniLM-L6-v2 text embedding, prompt -> looks
    model.py             the StreamModel adapter and weight files

Nothing heavy is imported here: `from mirage_lsd.models.builtin.model import BuiltinModel`.
"""
