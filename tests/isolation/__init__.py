"""Helpers for the cross-tenant isolation matrix and the two-instance tests."""
