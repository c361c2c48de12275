"""Training and evaluation examples: records -> Example(conversation, rubric, reference, id)."""
