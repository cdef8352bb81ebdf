"""jupyterhub-appliance: a packaged single-host JupyterHub for GPU machines."""

# The one place the version lives: pyproject.toml, the .deb and applctl read it here.
__version__ = "0.2.0"
