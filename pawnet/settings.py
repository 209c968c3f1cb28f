"""What a training run is asked for: one dataclass, written into the run folder at the start and
read back by `--resume`, so a resumed run goes on exactly as it began."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

from .architectures import ARCHITECTURES, Recipe
from .config_check import MAX_SIZE, MIN_SIZE
from .errors import UserError


@dataclass(frozen=True)
class RunSettings:
    """The settings of one `pawnet train` run. None means "the architecture's default"."""

    data: str
    val: str | None = None
    arch: str = "seed"
    epochs: int | None = None
    batch_size: int | None = None
    img_size: int | None = None
    seed: int = 0
    precision: str = "auto"
    use_cache: bool = True
    finetune: bool = False

    def __post_init__(self):
        # Paths are kept as text, since the settings go into config.json as they are, and whole,
        # since `--resume` may be run from another folder.
        object.__setattr__(self, "data", os.path.abspath(self.data))
        if self.val is not None:
            object.__setattr__(self, "val", os.path.abspath(self.val))
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        if self.finetune and ARCHITECTURES[self.arch].finetune is None:
            fine = [name for name, a in ARCHITECTURES.items() if a.finetune is not None]
            raise UserError(
                f"--finetune is for pretrained networks ({', '.join(fine)}); {self.arch} trains whole already"
            )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSettings:
        return cls(**{k: v for k, v in d.items() if k in cls.names()})

    def recipe(self) -> Recipe:
        """The architecture's recipe (or its fine-tuning one) with this run's epochs, batch size and
        image size."""
        entry = ARCHITECTURES[self.arch]
        recipe = entry.finetune if self.finetune else entry.recipe
        recipe = replace(
            recipe,
            epochs=_given(self.epochs, recipe.epochs),
            batch_size=_given(self.batch_size, recipe.batch_size),
            preprocessing=replace(recipe.preprocessing, size=_given(self.img_size, recipe.preprocessing.size)),
        )
        for option, value in (("--epochs", recipe.epochs), ("--batch-size", recipe.batch_size)):
            if value < 1:
                raise UserError(f"{option} {value}: must be at least 1")
        if not MIN_SIZE <= recipe.preprocessing.size <= MAX_SIZE:
            raise UserError(f"--img-size {recipe.preprocessing.size}: must be from {MIN_SIZE} to {MAX_SIZE}")
        return recipe


def _given(value, default):
    return default if value is None else value
