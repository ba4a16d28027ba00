"""A run's evaluated model gated against the champion and registered (challenger, champion)."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "registry": "register_and_promote",
    },
)
