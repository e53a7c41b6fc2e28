"""The crystal diffusion prior: denoiser, model, sampler, transitions and their likelihoods, pretraining.

Torch-free entry points (``pretrain_config``, ``diffusion_config``) import no torch; this file imports nothing.
"""
