"""The seed's helpers over lists of plugin metadata."""
