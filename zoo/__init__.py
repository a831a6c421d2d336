"""zoo: an open, trainable Instruct-Imagen (arXiv 2401.01952) on Lightning, diffusers, transformers and peft.

Importing `zoo` is cheap: only the instruction schema is loaded here; models, Lightning modules and the CLI are
imported from their own modules when needed.
"""

from zoo.instruction import ContextItem, Instruction, InstructionBatch, collate_instructions

__all__ = ["ContextItem", "Instruction", "InstructionBatch", "collate_instructions"]
__version__ = "0.1.0"
