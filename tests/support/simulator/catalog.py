"""The models the simulator knows about: their sizes, digests, layers and capabilities.

Ollama describes a model in three places that must agree with each other — `/api/tags`,
`/api/show` and the layers `/api/pull` reports — so they are all derived here from one
`ModelSpec`. The three models the stack ships with carry the real sizes from Ollama's library;
llama3.2's digest and layers are the real ones too, as are the sizes and digests of the two
models added for embeddings (`nomic-embed-text`) and thinking (`qwen3:0.6b`), taken from a
real `/api/tags`. Anything else gets a synthetic but deterministic spec, so a test can put any
name on the simulator's shelf.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DEFAULT_TAG = "latest"
DEFAULT_REGISTRY_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_NUM_CTX = 4096
"""The context a model is loaded with when the request sets no `num_ctx` (OLLAMA_CONTEXT_LENGTH
of v0.6.8–v0.13; recent releases size it by free VRAM)."""

# The config layer, template, licence and params blobs are small; only the weights are big.
_SMALL_LAYER_SIZES = (1429, 7711, 6016, 96, 561)


def normalize_name(name: str) -> str:
    """Return `name` with Ollama's implicit `:latest` tag added when it has none."""
    name = name.strip()
    # A registry host may carry a port ("host:5000/ns/model"), so only the last path part counts.
    last = name.rsplit("/", 1)[-1]
    if ":" in last or not name:
        return name
    return f"{name}:{DEFAULT_TAG}"


def name_parts(name: str) -> tuple[str, str, str]:
    """(host, namespace, "model:tag") of a name, with Ollama's defaults filled in, as its
    `model.ParseName` does: `llama3.2` is `registry.ollama.ai`, `library`, `llama3.2:latest`."""
    parts = normalize_name(name).split("/")
    host, namespace = DEFAULT_REGISTRY_HOST, DEFAULT_NAMESPACE
    if len(parts) >= 3:
        host, namespace = parts[-3], parts[-2]
    elif len(parts) == 2:
        namespace = parts[0]
    return host, namespace, parts[-1]


def full_name(name: str) -> str:
    """The fully qualified name Ollama's capability errors print (`registry.ollama.ai/...`)."""
    return "/".join(name_parts(name))


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Layer:
    """One blob of a model as `/api/pull` reports it."""

    digest: str  # "sha256:<64 hex>"
    size: int

    @property
    def short(self) -> str:
        """The 12 hex digits Ollama prints in `pulling <short>`."""
        return self.digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the simulator says about one model."""

    name: str  # always normalized, "family:tag"
    size: int
    parameter_size: str
    quantization_level: str
    family: str = "llama"
    digest: str = ""
    capabilities: tuple[str, ...] = ("completion",)
    context_length: int = 131072
    embedding_length: int = 2048
    """`<family>.embedding_length` in `/api/show`, and the length of `/api/embed` vectors."""
    layers: tuple[Layer, ...] = field(default=())

    def __post_init__(self) -> None:
        # Frozen dataclass: derived defaults must go through object.__setattr__.
        if not self.digest:
            object.__setattr__(self, "digest", _sha256_hex(f"manifest:{self.name}"))
        if not self.layers:
            object.__setattr__(self, "layers", _synthetic_layers(self.name, self.size))

    @property
    def details(self) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


def _synthetic_layers(name: str, size: int) -> tuple[Layer, ...]:
    small = [s for s in _SMALL_LAYER_SIZES if s < size]
    weights = size - sum(small)
    sizes = [weights, *small]
    return tuple(
        Layer(digest=f"sha256:{_sha256_hex(f'blob:{name}:{i}')}", size=s)
        for i, s in enumerate(sizes)
    )


_LLAMA32_LAYERS = (
    Layer("sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff", 2019377376),
    Layer("sha256:966de95ca8a62200913e3f8bfbf84c8494536f1b94b49166851e76644e966396", 1429),
    Layer("sha256:fcc5a6bec9daf9b561a68827b67ab6088e1dba9d1fa2a50d7bbcc8384e0a265d", 7711),
    Layer("sha256:a70ff7e570d97baaf4e62ac6e6ad9975e04caa6d900d3742d37698494479e0cd", 6016),
    Layer("sha256:56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb", 96),
    Layer("sha256:34bb5ab01051a11372a91f95f3fbbc51173eed8e7f13ec395b9ae9b8bd0e242b", 561),
)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="llama3.2:latest",
            size=2019393189,
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            capabilities=("completion", "tools"),
            embedding_length=3072,
            layers=_LLAMA32_LAYERS,
        ),
        ModelSpec(
            name="mistral:latest",
            size=4113301824,
            parameter_size="7.2B",
            quantization_level="Q4_0",
            capabilities=("completion", "tools"),
            context_length=32768,
            embedding_length=4096,
        ),
        ModelSpec(
            name="codellama:7b",
            size=3825910662,
            parameter_size="7B",
            quantization_level="Q4_0",
            context_length=16384,
            embedding_length=4096,
        ),
        ModelSpec(
            name="llama3.2:1b",
            size=1321098329,
            parameter_size="1.2B",
            quantization_level="Q8_0",
            capabilities=("completion", "tools"),
            embedding_length=2048,
        ),
        ModelSpec(
            name="gemma3:270m",
            size=291554930,
            parameter_size="268.10M",
            quantization_level="Q8_0",
            family="gemma3",
            context_length=32768,
            embedding_length=640,
        ),
        ModelSpec(
            name="nomic-embed-text:latest",
            size=274302450,
            parameter_size="137M",
            quantization_level="F16",
            family="nomic-bert",
            digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
            capabilities=("embedding",),
            context_length=2048,
            embedding_length=768,
        ),
        ModelSpec(
            name="qwen3:0.6b",
            size=522653767,
            parameter_size="751.63M",
            quantization_level="Q4_K_M",
            family="qwen3",
            digest="7df6b6e09427a769808717c0a93cadc4ae99ed4eb8bf5ca557c90846becea435",
            capabilities=("completion", "tools", "thinking"),
            context_length=40960,
            embedding_length=1024,
        ),
    )
}

DEFAULT_MODELS = ("llama3.2:latest", "mistral:latest", "codellama:7b")
# The embedding and thinking models can be pulled, but are not on the default shelf: tests
# count the default models, and the stack itself ships only the three above.
DEFAULT_REGISTRY = (
    *DEFAULT_MODELS,
    "llama3.2:1b",
    "gemma3:270m",
    "nomic-embed-text:latest",
    "qwen3:0.6b",
)


def spec_for(name: str) -> ModelSpec:
    """Return the catalog entry for `name`, or a deterministic synthetic one."""
    name = normalize_name(name)
    known = CATALOG.get(name)
    if known is not None:
        return known
    # ~0.5–4.5 GB, stable per name, so two runs of a test see the same numbers.
    size = 500_000_000 + int(_sha256_hex(f"size:{name}")[:8], 16) % 4_000_000_000
    return ModelSpec(name=name, size=size, parameter_size="1B", quantization_level="Q4_K_M")
