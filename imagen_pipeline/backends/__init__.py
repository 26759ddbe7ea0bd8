"""Image backends: the contract, the registry and one module per adapter."""
