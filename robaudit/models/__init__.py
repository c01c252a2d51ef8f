"""Small reference architectures shipped with robaudit (sample models, self-test corpus)."""
