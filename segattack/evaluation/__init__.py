"""How robust a model is, from the attacks and the metrics: the budget axis (per image, the
smallest budget that breaks it), its robustness curve and median (``budget``); the robustness
evaluation's readings, pooled scores, the per-image worst case and smallest breaking eps
(``robustness``)."""
