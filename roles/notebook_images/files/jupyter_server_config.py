# Managed by Ansible (role notebook_images): settings of the notebook server in the
# LTI-container images. The hub passes MJP_FRAME_ANCESTORS (who may show JupyterLab in
# an iframe, e.g. Moodle); cookies then need SameSite=None; Secure.
import os

c = get_config()  # noqa: F821
_ancestors = os.environ.get("MJP_FRAME_ANCESTORS", "").strip()
if _ancestors:
    c.ServerApp.tornado_settings = {
        "headers": {"Content-Security-Policy": "frame-ancestors " + _ancestors},
        "xsrf_cookie_kwargs": {"samesite": "None", "secure": True},
    }
