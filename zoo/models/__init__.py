"""Networks: the frozen text encoder, backbone presets and the context-reading InstructUNet."""
