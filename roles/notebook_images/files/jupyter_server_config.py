# Managed by Ansible (role notebook_images): settings of the notebook server in the
# LTI-container images. The hub passes MJP_FRAME_ANCESTORS (who may show JupyterLab in
# an iframe, e.g. Moodle); cookies then need SameSite=None; Secure.
import json
import os

c = get_config()  # noqa: F821
_settings = {}

# Jnotice (the time and memory warnings) reads its notice files from the server's root
# directory, the user's home; their names start with a dot, so the server must serve
# hidden files (they are the user's own files either way).
try:
    with open("/usr/local/etc/mjp/notice.json", encoding="utf-8") as _handle:
        _notice = json.load(_handle)
except (OSError, ValueError):
    _notice = {}
_settings["page_config_data"] = {
    "jnotice": {
        "path": ".jnotice.txt",
        "stickyPath": str(_notice.get("sticky_file") or ".jnotice.sticky.txt"),
        "pollMs": int(_notice.get("poll_seconds") or 60) * 1000,
    }
}
c.ContentsManager.allow_hidden = True

_ancestors = os.environ.get("MJP_FRAME_ANCESTORS", "").strip()
if _ancestors:
    _settings["headers"] = {"Content-Security-Policy": "frame-ancestors " + _ancestors}
    _settings["xsrf_cookie_kwargs"] = {"samesite": "None", "secure": True}
c.ServerApp.tornado_settings = _settings
