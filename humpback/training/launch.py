"""How the train stage starts its processes: `runtime.launcher`, an execution setting (no stage lists it, so
changing it reruns nothing, and dvc.yaml's `cmd` stays `python -m stages.train ...` for every launcher).

- `single`: the stage trains in its own process, as always;
- `torchrun`: the stage replaces itself (exec) with `torchrun --standalone --nproc-per-node N -m stages.train
  <the same arguments>`: N data-parallel processes on this machine (NCCL on GPUs, gloo on CPUs);
- `accelerate`: the same through `accelerate launch --config_file <runtime.launcher.config>`, for FSDP or
  DeepSpeed ZeRO-3 (configs/accelerate/).

The processes it starts find `HUMPBACK_LAUNCHED` set and train. Exec, not a child process: a signal that stops
the stage (Ctrl-C, `kill`) reaches the launcher itself, which stops its workers.

Across machines (`nodes` > 1) every node runs the same stage command and its own launcher, and the launchers
meet at `rendezvous` (node 0's HOST:PORT): torchrun through its c10d rendezvous (`--nnodes --rdzv-backend c10d
--rdzv-endpoint --rdzv-id` instead of `--standalone`, which means one node), accelerate through its
multi-machine settings (`--num_machines --machine_rank --main_process_ip --main_process_port`). With `srun`
set, the stage on the first node starts one copy of itself per node (`srun --ntasks-per-node=1`), each marked
with `HUMPBACK_ON_NODE`, so one `dvc repro` inside a Slurm allocation trains on all of them. Every node must
see the checkout at the same path (a shared filesystem): the inputs, the checkpoints and the outputs, which
global rank 0 writes wherever it runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence

import torch.distributed as dist

from humpback.params import LauncherParams, Params, ParamsError

log = logging.getLogger(__name__)

LAUNCHED_ENV = "HUMPBACK_LAUNCHED"  # set in the training processes a launcher started
ON_NODE_ENV = "HUMPBACK_ON_NODE"  # set in the per-node copies srun started: they launch, never srun again
NODE_RANK_ENV = ("NODE_RANK", "SLURM_NODEID")  # node_rank: env, first found
DEFAULT_PORT = "29500"  # torch's MASTER_PORT default


def launch_command(
    launcher: LauncherParams, module: str, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str] | None:
    """The command line that runs `python -m module argv` under `launcher`; None = run here, in-process
    (`single`, or this process was itself started by a launcher). `env` (default: this process's) is where
    a node finds its rank and the rendezvous address when params leave them to the cluster."""
    env = os.environ if env is None else env
    if launcher.processes < 0:
        raise ParamsError(f"runtime.launcher.processes must be >= 0, got {launcher.processes}")
    if launcher.nodes < 1:
        raise ParamsError(f"runtime.launcher.nodes must be >= 1, got {launcher.nodes}")
    if launcher.kind == "single" and launcher.nodes > 1:
        raise ParamsError("runtime.launcher.nodes > 1 needs kind torchrun or accelerate, not single")
    if launcher.kind == "single" or env.get(LAUNCHED_ENV):
        return None
    if launcher.nodes > 1 and launcher.srun and not env.get(ON_NODE_ENV):
        return srun_command(launcher.nodes, module, argv)
    if launcher.kind == "torchrun":
        procs = str(launcher.processes) if launcher.processes else "auto"
        prefix = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}"]
        if launcher.nodes == 1:
            prefix.insert(3, "--standalone")
        else:  # the node rank is the rendezvous's to assign under c10d (torchrun ignores --node-rank there)
            prefix[3:3] = [
                f"--nnodes={launcher.nodes}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={rendezvous(launcher, env)}",
                f"--rdzv-id={rendezvous_id(module, argv)}",
            ]
    else:
        prefix = [sys.executable, "-m", "accelerate.commands.launch"]
        if launcher.config:
            if not os.path.isfile(launcher.config):
                raise FileNotFoundError(f"runtime.launcher.config: no such file {launcher.config}")
            prefix += ["--config_file", launcher.config]
        if launcher.processes:  # accelerate counts processes over all machines
            prefix += ["--num_processes", str(launcher.processes * launcher.nodes)]
        if launcher.nodes > 1:
            host, port = rendezvous(launcher, env).rsplit(":", 1)
            prefix += [
                "--num_machines",
                str(launcher.nodes),
                "--machine_rank",
                str(node_rank(launcher, env)),
                "--main_process_ip",
                host,
                "--main_process_port",
                port,
                # torchrun on every node; accelerate's default for DeepSpeed is pdsh over ssh from one
                "--deepspeed_multinode_launcher",
                "standard",
            ]
    return [*prefix, "-m", module, *argv]


def srun_command(nodes: int, module: str, argv: Sequence[str]) -> list[str]:
    """One copy of the stage per node of the Slurm allocation; `--kill-on-bad-exit` stops the others when one
    fails, as torchrun stops its workers. Options the allocation needs (CPUs per task, GPUs) come from Slurm's
    own SRUN_* / SLURM_* input variables."""
    srun = shutil.which("srun")
    if srun is None:
        raise ParamsError(
            "runtime.launcher.srun is true but srun is not on PATH: run inside a Slurm allocation, "
            "or set srun: false and start the stage command on every node yourself"
        )
    return [
        srun,
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        module,
        *argv,
    ]


def rendezvous(launcher: LauncherParams, env: Mapping[str, str]) -> str:
    """HOST:PORT where the nodes meet: the setting, else the MASTER_ADDR / MASTER_PORT convention."""
    if launcher.rendezvous:
        endpoint = launcher.rendezvous
    elif env.get("MASTER_ADDR"):
        endpoint = f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT') or DEFAULT_PORT}"
    else:
        raise ParamsError(
            "runtime.launcher.nodes > 1 needs node 0's address: set runtime.launcher.rendezvous "
            "(HOST:PORT) or MASTER_ADDR (and MASTER_PORT) on every node"
        )
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ParamsError(f"runtime.launcher.rendezvous must be HOST:PORT, got {endpoint!r}")
    return endpoint


def node_rank(launcher: LauncherParams, env: Mapping[str, str]) -> int:
    """This machine's rank among `nodes`: the setting, else NODE_RANK, else Slurm's SLURM_NODEID."""
    if launcher.node_rank != "env":
        rank = launcher.node_rank
    else:
        found = next((env[k] for k in NODE_RANK_ENV if env.get(k, "").isdigit()), None)
        if found is None:
            raise ParamsError(
                "runtime.launcher.node_rank is env but neither " + " nor ".join(NODE_RANK_ENV) + " is set on this node"
            )
        rank = int(found)
    if not 0 <= rank < launcher.nodes:
        raise ParamsError(f"runtime.launcher.node_rank {rank} is outside 0..{launcher.nodes - 1}")
    return rank


def rendezvous_id(module: str, argv: Sequence[str]) -> str:
    """The same on every node without being set anywhere: the stage command they all run."""
    return "humpback-" + hashlib.sha256("\0".join([module, *argv]).encode()).hexdigest()[:16]


def relaunch(module: str) -> Callable[[Params, list[str]], None]:
    """For `stage_runner.stage(..., launch=)`: exec `module` under `runtime.launcher`, or return to run here."""

    def launch(params: Params, argv: list[str]) -> None:
        command = launch_command(params.runtime.launcher, module, argv)
        if command is None:
            return
        log.info("runtime.launcher: %s", " ".join(command))
        sys.stdout.flush()
        sys.stderr.flush()
        # srun starts the stage again on each node (which then launches); a launcher starts training processes
        marker = ON_NODE_ENV if os.path.basename(command[0]) == "srun" else LAUNCHED_ENV
        os.execve(command[0], command, {**os.environ, marker: "1"})

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
