"""Each built-in model's natural input shape, shared by the model and model-file tests."""

NATURAL = {
    "mlp": (1, 8, 8),
    "cnn": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "vgg_compact": (3, 32, 32),
    "vgg11_bn": (3, 32, 32),
    "vgg16_bn": (3, 32, 32),
    "resnet18": (3, 32, 32),
}
