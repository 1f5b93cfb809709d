"""The base every stage's details derive from, and the registry the payload union is built from.

A stage's details are the typed part of its `StageResult` (`StageResult.details`) that only that stage
writes: the `stage` field is the discriminator that lets the record load each back as its own model
(never as a dict read by string keys), and `extra="forbid"` makes details from another version fail
loudly instead of losing fields silently. One name throughout: the field `details`, the base `Details`,
the models `<Stage>Details`, the union `StageDetails`, the reader `details_as(Model)`.

A model that declares `stage: Literal["<name>"] = "<name>"` registers itself under that name when its
class is created (as guidellm's `PydanticClassRegistryMixin` does), so the union is derived from the
models rather than listed by hand; a second model for the same stage is refused at import.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field


class Details(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _registry: ClassVar[dict[str, type[Details]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("stage")
        if field is None or not isinstance(field.default, str):
            return  # a part of a payload (an attestation reference), not a stage's payload
        name = field.default
        known = Details._registry.get(name)
        # the same class again: a module imported twice (importlib.reload in a test), not a second payload
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"stage {name!r} has two payload models: {known.__module__}.{known.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
        Details._registry[name] = cls

    @classmethod
    def registered(cls) -> dict[str, type[Details]]:
        """Every stage's payload model by stage name, in the order they were defined."""
        return dict(Details._registry)

    @classmethod
    def union(cls) -> Any:
        """The discriminated union of every registered payload model (what `StageResult.details` holds)."""
        models = tuple(Details._registry.values())
        if not models:
            raise RuntimeError("no stage payload model is registered (import pipeline.schemas)")
        return Annotated[Union[models], Field(discriminator="stage")]  # noqa: UP007  (built from a tuple)
