"""How the train stage starts its processes: `runtime.launcher`, an execution setting (no stage lists it, so
changing it reruns nothing, and dvc.yaml's `cmd` stays `python -m stages.train ...` for every launcher).

- `single`: the stage trains in its own process, as always;
- `torchrun`: the stage replaces itself (exec) with `torchrun --standalone --nproc-per-node N -m stages.train
  <the same arguments>`: N data-parallel processes on this machine (NCCL on GPUs, gloo on CPUs);
- `accelerate`: the same through `accelerate launch --config_file <runtime.launcher.config>`, for FSDP or
  DeepSpeed ZeRO-3 (configs/accelerate/).

The processes it starts find `HUMPBACK_LAUNCHED` set and train. Exec, not a child process: a signal that stops
the stage (Ctrl-C, `kill`) reaches the launcher itself, which stops its workers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

import torch.distributed as dist

from humpback.params import LauncherParams, Params, ParamsError

log = logging.getLogger(__name__)

LAUNCHED_ENV = "HUMPBACK_LAUNCHED"


def launch_command(launcher: LauncherParams, module: str, argv: Sequence[str]) -> list[str] | None:
    """The command line that runs `python -m module argv` under `launcher`; None = run here, in-process
    (`single`, or this process was itself started by a launcher)."""
    if launcher.processes < 0:
        raise ParamsError(f"runtime.launcher.processes must be >= 0, got {launcher.processes}")
    if launcher.kind == "single" or os.environ.get(LAUNCHED_ENV):
        return None
    if launcher.kind == "torchrun":
        procs = str(launcher.processes) if launcher.processes else "auto"
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    else:
        prefix = [sys.executable, "-m", "accelerate.commands.launch"]
        if launcher.config:
            if not os.path.isfile(launcher.config):
                raise FileNotFoundError(f"runtime.launcher.config: no such file {launcher.config}")
            prefix += ["--config_file", launcher.config]
        if launcher.processes:
            prefix += ["--num_processes", str(launcher.processes)]
    return [*prefix, "-m", module, *argv]


def relaunch(module: str) -> Callable[[Params, list[str]], None]:
    """For `stage_runner.stage(..., launch=)`: exec `module` under `runtime.launcher`, or return to run here."""

    def launch(params: Params, argv: list[str]) -> None:
        command = launch_command(params.runtime.launcher, module, argv)
        if command is None:
            return
        log.info("runtime.launcher: %s", " ".join(command))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], command, {**os.environ, LAUNCHED_ENV: "1"})

    return launch


def is_main_process() -> bool:
    """Rank 0 of a multi-process run, or the one process of a single one: the process that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def close_process_group() -> None:
    """Wait for every training process, then take the process group down before the interpreter exits: left to
    exit handlers, DeepSpeed's CPU run (gloo and its shared-memory communicator) at times aborted a finished
    process ("terminate called without an active exception"), failing a stage whose outputs were written."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
