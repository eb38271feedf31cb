"""ltihub: the hub side of the Moodle + JupyterHub LTI-container platform."""
