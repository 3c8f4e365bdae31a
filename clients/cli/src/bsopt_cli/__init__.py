"""bsopt service package."""
