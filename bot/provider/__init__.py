"""Adapter for the Stable Diffusion API (ModelsLab): v3 LoRA training and v6 generation with a LoRA.

The requests, answers and errors it speaks are the domain's (`bot.jobs.training_api`,
`bot.jobs.image_api`, `bot.jobs.provider_errors`); `client.py` is the HTTP adapter over them.
"""
