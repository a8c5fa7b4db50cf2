"""Front-ends that turn raw inputs (sentences, WAV files) into the feature arrays a Dataset holds.

Each front-end runs offline and imports its heavy dependency lazily, so the core package
installs and runs without them.
"""

from robustmsa.features.text import (
    TextEncoder,
    default_text_encoder_path,
    encoder_fingerprint,
    load_text_encoder,
    resolve_encoder_path,
)

__all__ = ["TextEncoder", "default_text_encoder_path", "encoder_fingerprint", "load_text_encoder", "resolve_encoder_path"]
