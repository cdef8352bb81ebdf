"""The privileged part of the appliance: the only code that runs as root."""
