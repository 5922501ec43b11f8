"""The System tab: the bundle, backend and GPU in use, `doctor`'s findings, and the virtual camera's setup."""

import dataclasses

from .. import engine, home, vcam
from ..commands import doctor
from ..messages import error_line


@dataclasses.dataclass
class SystemTab:
    recheck: object
    summary: object
    report: object


def build(gr) -> SystemTab:
    recheck = gr.Button("Check again", elem_id="sys-check")
    summary = gr.Markdown(elem_id="sys-summary")
    report = gr.Markdown(elem_id="sys-report")
    gr.Markdown("### Virtual camera setup on this computer\n```\n" + "\n".join(vcam.setup_instructions()) + "\n```")
    return SystemTab(recheck, summary, report)


def doctor_table(results) -> str:
    """`doctor`'s report as a Markdown table: each finding and its next step."""
    cell = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| status | topic | detail | next step |", "|---|---|---|---|"]
    lines += [f"| {cell(item.status)} | {cell(item.topic)} | {cell(item.detail)} | {cell(item.next_step)} |"
              for item in results]
    return "\n".join(lines)


def system_line() -> str:
    """The bundle in use, the backend `auto` picks, the GPU."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (everything runs on the CPU)"
    try:
        bundle = home.resolve_bundle()
        choice = engine.choose_engine(bundle, "auto")
        backend = f"{choice.backend} on {choice.device} ({choice.reason.split(';')[0][:160]})"
        in_use = f"{bundle.path} ({bundle.config.get('dtype')})"
    except Exception as error:  # noqa: BLE001
        in_use, backend = error_line(error), "none until a bundle exists"
    return f"**Bundle:** {in_use}  \n**Backend:** {backend}  \n**GPU:** {gpu}"


def on_check():
    return system_line(), doctor_table(doctor.run_checks())


def wire(tab: SystemTab, demo) -> None:
    """Checked when the page loads, and again on request."""
    tab.recheck.click(on_check, None, [tab.summary, tab.report])
    demo.load(on_check, None, [tab.summary, tab.report])
