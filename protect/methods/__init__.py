"""Protection methods, one per module; ``protect.registry.METHODS`` imports every module here on first use."""
