"""hacrl: Heterogeneous Agent Collaborative Reinforcement Learning.

Several different language models answer the same prompts; every answer is verified once and every
model learns from the whole shared pool with the HACPO objective (see docs/algorithms.md).
"""

__version__ = "0.1.0"
