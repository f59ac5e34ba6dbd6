"""Shared test set-up: never touch the network, keep user settings isolated."""

from __future__ import annotations

import os

# Must be set before huggingface_hub is imported anywhere: tests download nothing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TORCH_NUM_THREADS", "2")
