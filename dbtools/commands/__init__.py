"""One module per command of ``python -m dbtools``, named after its make target."""
