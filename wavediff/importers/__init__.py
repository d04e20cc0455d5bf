"""Importers of other toolkits' checkpoints (lmnt-com/diffwave)."""
