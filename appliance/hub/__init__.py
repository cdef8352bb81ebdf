"""What runs inside JupyterHub as uid jupyterhub: spawner, spawn form, authenticator,
proxy class, configurer and the launchers of the hub and proxy units."""
