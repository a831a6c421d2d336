"""The diffusion process, kept apart from the network: schedules, the training objective, samplers and guidance.

Nothing here imports `zoo.models`; every function takes the model (or a model function) as an argument.
"""
