"""The semdraw-live drawing window."""
