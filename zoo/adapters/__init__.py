"""LoRA adapter folders: the format and strict loading (`folder`), export, mix and merge (`share`)."""
