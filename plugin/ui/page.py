"""The control panel's page (Gradio Blocks): one tab a module (enroll_tab, live_tab, recordings_tab,
system_tab), each with its layout and what its buttons do. Every handler works on the session of the browser
that called it (Panel.session), and opens server paths only through the allowed folders.
"""

from . import enroll_tab, live_tab, recordings_tab, system_tab
from .jobs import Panel
from .widgets import import_gradio, profiles_refresher


def build(panel: Panel):
    """The Gradio Blocks of the control panel."""
    gr = import_gradio()
    # uploads and thumbnails older than a day go hourly (a panel left running for weeks); the rest on stop
    with gr.Blocks(title="InstantRestore Live", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# InstantRestore Live\nYour face, restored with your own photos: enroll once, then go live or "
                    "restore a recording.")
        with gr.Tabs():
            with gr.Tab("Enroll", id="enroll"):
                enroll = enroll_tab.build(gr)
            with gr.Tab("Live", id="live"):
                live = live_tab.build(gr, panel)
            with gr.Tab("Recordings", id="recordings"):
                recordings = recordings_tab.build(gr, panel)
            with gr.Tab("System", id="system"):
                system = system_tab.build(gr)

        refresh_profiles = profiles_refresher(gr)
        profile_outputs = [enroll.table, enroll.remove_pick, live.profile, recordings.profile]
        enroll_tab.wire(gr, panel, enroll, profile_outputs, refresh_profiles)
        live_tab.wire(gr, panel, live)
        recordings_tab.wire(gr, panel, recordings)
        system_tab.wire(system, demo)
        demo.load(refresh_profiles, None, profile_outputs)

        def on_unload(request: gr.Request):
            panel.end_session(request)  # closing the tab leaves no camera held

        demo.unload(on_unload)
    return demo
