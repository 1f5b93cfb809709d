"""Details of the leak stage: where secret bytes were searched and where (never what) was found."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas.base import Details


class LeakFinding(BaseModel):
    """One place a secret's bytes were found. It names the secret by id and the needle by label
    ("value", "line 3"), never by content; a secret found in a file *name* keeps the path only with
    the secret's bytes masked."""

    model_config = ConfigDict(extra="forbid")

    secret_id: str
    needle: str
    # how the bytes were hidden ("base64", "hex", "reversed", "gzip", "split by whitespace", or a
    # combination such as "gzip, base64"); None: there as they are
    encoding: str | None = None
    where: Literal["manifest", "config", "history", "layer", "layer-blob"]
    layer_digest: str | None = None
    history_index: int | None = None
    path: str | None = None  # file path in the layer, or JSON path in the config
    in_name: bool = False  # the secret is in a file or link name, not its content

    def describe(self) -> str:
        loc = {
            "manifest": "manifest",
            "config": f"config {self.path}",
            "history": f"history[{self.history_index}] {self.path or ''}".strip(),
            "layer": f"layer {self.layer_digest} {'name of ' if self.in_name else ''}{self.path}",
            "layer-blob": f"layer {self.layer_digest} (compressed bytes)",
        }[self.where]
        how = f", {self.encoding}" if self.encoding else ""
        return f"secret '{self.secret_id}' ({self.needle}{how}) in {loc}"


class LeakDetails(Details):
    stage: Literal["leak"] = "leak"
    image: str
    digest: str
    secrets: list[str]
    needles: dict[str, int] = Field(default_factory=dict)  # per secret: how many byte sequences searched
    public_lines_excluded: dict[str, int] = Field(default_factory=dict)
    reference_image: str | None = None
    layers_scanned: int = 0
    files_scanned: int = 0
    bytes_scanned: int = 0
    history_entries: int = 0
    encodings: list[str] = Field(default_factory=list)  # the forms every needle was searched in
    files_decompressed: int = 0  # gzip/zlib files inside layers also searched decompressed
    decode_limited: list[str] = Field(default_factory=list)  # of those, cut at the decompressed-size limit
    # of those, the ones that decompressed to another gzip/zlib stream: that one is searched as it is only
    nested_compressed: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
    findings: list[LeakFinding] = Field(default_factory=list)

    @property
    def leaks(self) -> int:
        return len(self.findings)
