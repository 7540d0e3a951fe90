"""Validation-only code that holds refsnn against independent implementations (never imported by refsnn)."""
