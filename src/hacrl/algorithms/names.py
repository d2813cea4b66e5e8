"""Names the configuration validates against, kept free of torch so a config is checked before torch loads."""

from __future__ import annotations

GRPO_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
"""TRL's `loss_type` names for the GRPO loss (how token terms are averaged)."""
