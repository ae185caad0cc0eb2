"""How robust a model is, from the attacks and the metrics: the budget axis (per image, the
smallest budget that breaks it), its robustness curve and median."""
