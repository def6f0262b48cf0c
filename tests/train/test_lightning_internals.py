"""Every private Lightning API the project uses still exists (`train/lightning_internals.py`); a
release that drops one fails here, naming it, instead of deep inside a resumed run."""

from __future__ import annotations

import pytest

from empathic_lora.train import lightning_internals


@pytest.mark.parametrize(
    ("owner", "name"),
    [(owner, name) for owner, names in lightning_internals.USED.items() for name in names],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_the_internal_still_exists(owner: type, name: str) -> None:
    if name.startswith("self."):
        instance = owner() if owner is lightning_internals.ModelCheckpoint else None
        assert instance is not None and hasattr(instance, name.removeprefix("self.")), (
            f"{owner.__module__}.{owner.__name__} instances no longer have {name.removeprefix('self.')}: "
            "train/lightning_internals.py must change with this Lightning release"
        )
    else:
        assert callable(getattr(owner, name, None)), (
            f"{owner.__module__}.{owner.__name__}.{name} is gone: train/lightning_internals.py must change with this "
            "Lightning release"
        )
