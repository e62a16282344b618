"""The built-in architectures: the model registry (``bench.zoo.models.MODELS``) imports every module here on
first use, so a new architecture is one new file with a ``@register_model`` factory."""
