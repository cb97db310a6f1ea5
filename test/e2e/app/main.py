"""Serve the vqalab end-to-end JupyterLab 4.6.4 front end (build/) with Debian's jupyter-server 1.23
and jupyterlab-server 2.16 (LabServerApp). Federated extensions are found the way a user's
JupyterLab finds them: in the labextensions folders of the Jupyter data path (JUPYTER_DATA_DIR,
sys.prefix, /usr/local/share/jupyter, /usr/share/jupyter), where `vqalab lab install` puts ours.
Workspaces and user settings live under $VQALAB_E2E_RUNTIME (a temporary folder per test run)."""
import json
import os
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("JUPYTER_NO_CONFIG", "1")

from jupyter_server.base.handlers import APIHandler, JupyterHandler  # noqa: E402
from jupyter_server.base.zmqhandlers import WebSocketMixin  # noqa: E402
from jupyterlab_server import LabServerApp  # noqa: E402
from tornado import web  # noqa: E402
from tornado.websocket import WebSocketHandler  # noqa: E402

RUNTIME = os.environ.get("VQALAB_E2E_RUNTIME") or tempfile.mkdtemp(prefix="vqalab-lab-")


class IdentityShim(APIHandler):
    """jupyter-server 2.x /api/me, absent from 1.23: JupyterLab 4's UserManager polls it."""

    @web.authenticated
    def get(self):
        name = "vqalab"
        self.finish(json.dumps({
            "identity": {"username": name, "name": name, "display_name": name,
                         "initials": "V", "avatar_url": None, "color": None},
            "permissions": {},
        }))


class EventsShim(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """jupyter-server 2.x /api/events/subscribe (event bus); accept and stay silent."""

    async def get(self, *args, **kwargs):
        if self.current_user is None:
            raise web.HTTPError(403)
        return await super().get(*args, **kwargs)

    def on_message(self, message):
        pass


with open(os.path.join(HERE, "package.json")) as fid:
    VERSION = json.load(fid)["version"]


def _jupyter_server_extension_points():
    return [{"module": __name__, "app": VqalabLabApp}]


class VqalabLabApp(LabServerApp):
    name = "vqalab_lab"
    extension_url = "/lab"
    default_url = "/lab"
    load_other_extensions = False
    app_name = "JupyterLab (vqalab e2e)"
    app_version = VERSION
    app_settings_dir = os.path.join(HERE, "settings")  # overrides.json
    schemas_dir = os.path.join(HERE, "build", "schemas")
    static_dir = os.path.join(HERE, "build")
    templates_dir = os.path.join(HERE, "templates")
    themes_dir = os.path.join(HERE, "build", "themes")
    user_settings_dir = os.path.join(RUNTIME, "user_settings")
    workspaces_dir = os.path.join(RUNTIME, "workspaces")

    def initialize_handlers(self):
        super().initialize_handlers()
        self.handlers.extend([
            (r"/api/me", IdentityShim),
            (r"/api/events/subscribe", EventsShim),
        ])

    def initialize_settings(self):
        super().initialize_settings()
        self.serverapp.web_app.settings["terminals_available"] = False


if __name__ == "__main__":
    VqalabLabApp.launch_instance()
