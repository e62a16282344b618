"""The built-in data sets, one module each: the data-set registry (``bench.zoo.data.DATASETS``) imports every
module here on first use, so a new data set is one new file with a ``@register_dataset`` function."""
