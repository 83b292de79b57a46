"""What trained models are for: denoising (`denoise`), compression (`codec`) and synthetic data (`synth`).

Pure functions over a loaded `genlab.runs.Run`; the `genlab denoise | compress | decompress | synth`
commands are thin wrappers around them. Submodules import lazily: `from genlab.uses import denoise`.
"""
