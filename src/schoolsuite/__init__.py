"""schoolsuite: mail and groupware for schools, sealed at rest."""

__version__ = "0.1.0"
