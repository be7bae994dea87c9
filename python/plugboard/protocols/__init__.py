"""The seed's runtime-checkable protocols: lifecycle and cloud-aware plugins."""
