"""The one exception the converter raises for anything the user can fix (bad path, unsupported model, bad tensors)."""


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted exactly; the message names the file, tensor or field."""
