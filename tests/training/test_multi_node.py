"""Past one machine: `runtime.launcher.nodes` > 1 builds the command lines torchrun and accelerate take for
multi-node training (checked with the launchers' own parsers), a Slurm allocation gets one copy of the stage
per node through srun, and two torchrun "nodes" on this machine (1 process each, gloo, c10d rendezvous on
127.0.0.1) train what one process trains. vLLM's node settings reach its engine (a stand-in `vllm` module:
vLLM is not a test dependency)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import sys
import types
from pathlib import Path

import pytest
import torch.distributed.run as torchrun
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import _filter_args, prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from safetensors.torch import load_file

from humpback.params import ParamsError, parse_params
from humpback.training.launch import LAUNCHED_ENV, ON_NODE_ENV, launch_command
from stages import train as train_stage
from tests.training.test_launch import REPO, finish, losses, raw_params, stage_argv, stage_process

ARGV = ["--role", "m1", "--out", "models/m1"]


def launcher(**settings):
    return parse_params(raw_params(**settings)).runtime.launcher


def command(env: dict[str, str], **settings) -> list[str]:
    return launch_command(launcher(**settings), "stages.train", ARGV, env=env)


# ------------------------------------------------------------------------------------------ command lines


def test_torchrun_across_nodes_is_a_c10d_rendezvous_that_torchrun_reads(monkeypatch):
    """nodes 4 × 8 processes: torchrun's own parser and launch config see 4 nodes meeting at MASTER_ADDR's
    c10d rendezvous, with an id every node computes alike (the stage command), and no `--standalone`."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # config_from_args sets it in os.environ otherwise
    cluster = {"MASTER_ADDR": "node1", "MASTER_PORT": "29400"}
    per_node = [command({**cluster, "SLURM_NODEID": str(n)}, kind="torchrun", processes=8, nodes=4) for n in range(4)]
    assert all(c == per_node[0] for c in per_node)  # the same command on every node
    cmd = per_node[0]
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--standalone" not in cmd
    args = torchrun.get_args_parser().parse_args(cmd[3:])
    config, program, program_args = torchrun.config_from_args(args)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (4, 4, 8)
    assert (config.rdzv_backend, config.rdzv_endpoint) == ("c10d", "node1:29400")
    assert config.run_id.startswith("humpback-") and not args.standalone
    assert program == sys.executable and program_args == ["-u", "-m", "stages.train", *ARGV]
    other_stage = launch_command(
        launcher(kind="torchrun", processes=8, nodes=4), "stages.train", ["--role", "m2"], env=cluster
    )
    assert torchrun.get_args_parser().parse_args(other_stage[3:]).rdzv_id != args.rdzv_id
    # the setting wins over the environment
    cmd = command(cluster, kind="torchrun", processes=8, nodes=4, rendezvous="head:1234")
    assert torchrun.get_args_parser().parse_args(cmd[3:]).rdzv_endpoint == "head:1234"


@pytest.mark.parametrize("config", ["lora_ddp.yaml", "deepspeed_zero3.yaml"])
def test_accelerate_across_nodes_as_accelerate_reads_it(config, monkeypatch):
    """The shipped one-node configs on 4 nodes: accelerate's own parser and launch preparation give torchrun
    4 nodes of 8 processes, this node's rank from SLURM_NODEID, node 0's address; DeepSpeed through torchrun
    on each node (`standard`), not pdsh over ssh."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = str(REPO / "configs/accelerate" / config)
    env = {"SLURM_NODEID": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29400"}
    cmd = command(env, kind="accelerate", processes=8, config=path, nodes=4)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args, defaults, mp_from_config = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
    assert (args.num_machines, args.machine_rank, args.num_processes) == (4, 2, 32)  # accelerate counts all
    if config.startswith("deepspeed"):
        assert args.use_deepspeed
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as accelerate's launch_command sets it
        launched, _ = prepare_deepspeed_cmd_env(args)
        assert launched is None  # None: torchrun in this process (`standard`), not a `deepspeed` pdsh command
    else:
        assert args.multi_gpu and not args.use_deepspeed
        prepare_multi_gpu_env(args)
    # what accelerate hands torchrun in this process (its _run_torchrun), as torchrun reads it
    script = ["--training_script", args.training_script, "--training_script_args", args.training_script_args]
    args = _filter_args(args, torchrun.get_args_parser(), script)
    config, _, program_args = torchrun.config_from_args(args)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (4, 4, 8)
    # the configs' rdzv_backend static: node ranks as given, node 0's store at main_process_ip:port
    assert (config.rdzv_backend, config.rdzv_endpoint, config.rdzv_configs["rank"]) == ("static", "node1:29400", 2)
    assert program_args == ["-u", "-m", "stages.train", *ARGV]


def test_node_rank_and_address_come_from_params_or_the_environment():
    ddp = str(REPO / "configs/accelerate/ddp_cpu.yaml")
    cmd = command({"NODE_RANK": "1", "SLURM_NODEID": "0", "MASTER_ADDR": "h"}, kind="accelerate", config=ddp, nodes=2)
    assert cmd[cmd.index("--machine_rank") + 1] == "1"  # NODE_RANK before SLURM_NODEID
    assert cmd[cmd.index("--main_process_port") + 1] == "29500"  # torch's default port
    cmd = command({"NODE_RANK": "0"}, kind="accelerate", config=ddp, nodes=2, node_rank=1, rendezvous="h:7")
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "h"
    with pytest.raises(ParamsError, match="NODE_RANK nor SLURM_NODEID"):
        command({"MASTER_ADDR": "h"}, kind="accelerate", config=ddp, nodes=2)
    with pytest.raises(ParamsError, match="outside 0..1"):
        command({"MASTER_ADDR": "h"}, kind="accelerate", config=ddp, nodes=2, node_rank=2)
    with pytest.raises(ParamsError, match="MASTER_ADDR"):
        command({"SLURM_NODEID": "0"}, kind="torchrun", nodes=2)
    with pytest.raises(ParamsError, match="HOST:PORT"):
        command({}, kind="torchrun", nodes=2, rendezvous="head")
    with pytest.raises(ParamsError, match="not single"):
        command({}, kind="single", nodes=2)
    with pytest.raises(ParamsError, match="nodes must be >= 1"):
        command({}, kind="torchrun", nodes=0)
    assert command({LAUNCHED_ENV: "1"}, kind="torchrun", nodes=2) is None  # a training process trains


def fake_srun(folder: Path) -> Path:
    """A stand-in for Slurm's srun on PATH: runs its command once per node with the variables Slurm sets
    (SLURM_NODEID, SLURM_PROCID, SLURM_NNODES), all at once, and fails if one fails."""
    script = folder / "srun"
    script.write_text(f"""#!{sys.executable}
import os, subprocess, sys
args = sys.argv[1:]
nodes = int(next(a for a in args if a.startswith("--nodes=")).split("=")[1])
program = args[next(i for i, a in enumerate(args) if not a.startswith("--")):]
procs = [subprocess.Popen(program, env={{**os.environ, "SLURM_NODEID": str(n), "SLURM_PROCID": str(n),
                                         "SLURM_NNODES": str(nodes)}}) for n in range(nodes)]
sys.exit(max(p.wait() for p in procs))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_srun_starts_the_stage_once_per_node(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_srun(tmp_path).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = command({}, kind="torchrun", processes=8, nodes=4, srun=True)
    assert cmd == [
        str(tmp_path / "srun"),
        "--nodes=4",
        "--ntasks=4",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "stages.train",
        *ARGV,
    ]
    on_node = command({ON_NODE_ENV: "1", "MASTER_ADDR": "h"}, kind="torchrun", processes=8, nodes=4, srun=True)
    assert on_node[:3] == [sys.executable, "-m", "torch.distributed.run"]  # a node's copy launches
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ParamsError, match="srun is not on PATH"):
        command({}, kind="torchrun", nodes=4, srun=True)


def test_the_node_settings_rerun_nothing():
    """No stage lists runtime.* (DVC reruns a stage for a params change only when it lists the key), so the
    node settings are execution settings; tests/test_pipeline.py's dvc status check changes them too."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = [
        (name, p)
        for name, s in stages.items()
        for p in s.get("do", s).get("params", [])
        if (p if isinstance(p, str) else next(iter(p))).split(".")[0] == "runtime"
    ]
    assert listed == []
    fields = {f.name for f in dataclasses.fields(launcher())}
    assert {"nodes", "node_rank", "rendezvous", "srun"} <= fields


# ------------------------------------------------------------------------------------------ vLLM


def test_vllm_node_settings_reach_the_engine(tiny_model_dir, monkeypatch):
    """runtime.tensor_parallel_size and runtime.gpu_memory_utilization are what the in-process vLLM engine is
    built with (a stand-in `vllm` module records the `LLM(...)` call)."""
    from humpback.engines.vllm_engine import VLLMEngine

    built = {}
    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **kwargs: built.update(kwargs)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = object
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # the engine sets it when unset: keep it to this test
    for name, module in {
        "vllm": vllm,
        "vllm.lora": types.ModuleType("vllm.lora"),
        "vllm.lora.request": request,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    raw = raw_params()
    raw["runtime"].update(tensor_parallel_size=8, gpu_memory_utilization=0.85)
    params = parse_params(raw)
    VLLMEngine(tiny_model_dir, params.generation, params.runtime)
    assert (built["tensor_parallel_size"], built["gpu_memory_utilization"]) == (8, 0.85)
    assert built["enable_prefix_caching"] is True


# ------------------------------------------------------------------------------------------ 2 nodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_as_one_process(tiny_model_dir, tmp_path, monkeypatch):
    """`dvc repro`'s train command on a 2-node "allocation" of this machine: srun (a stand-in) starts the stage
    on each node, each execs torchrun with 1 process, and the two meet at a c10d rendezvous on 127.0.0.1.
    Against the stage in one process (micro-batch 2, accumulation 2): the same losses and adapter weights,
    one writer, the card saying 2 processes. Both "nodes" share one folder, as a cluster's shared filesystem."""
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    for folder in (single, nodes):
        folder.mkdir()

    def params(folder: Path, **settings) -> Path:
        raw = raw_params(**settings)
        raw["train"]["epochs"] = 2.0  # 8 steps
        raw["runtime"]["save_steps"] = 0  # no checkpoints: resume across nodes is the DDP test's
        (folder / "p.yaml").write_text(yaml.safe_dump(raw))
        return folder / "p.yaml"

    cwd = Path.cwd()
    os.chdir(single)
    try:
        assert train_stage.main(stage_argv(single, tiny_model_dir, params(single))) == 0
    finally:
        os.chdir(cwd)

    srun = fake_srun(tmp_path)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.delenv(ON_NODE_ENV, raising=False)
    output = finish(
        stage_process(
            nodes,
            stage_argv(nodes, tiny_model_dir, params(nodes, kind="torchrun", processes=1, nodes=2, srun=True)),
            "nodes",
        )
    )
    assert output.count("torch.distributed.run --nnodes=2 --rdzv-backend=c10d") == 2  # one launcher per node

    one, two = losses(single), losses(nodes)
    assert sorted(one) == sorted(two) == list(range(1, 9))
    assert len((nodes / "live/plots/metrics/loss.tsv").read_text().splitlines()) == 1 + 8  # one writer
    loss_diff = max(abs(two[s] - one[s]) for s in one)
    a, b = (load_file(f / "models/m0/adapter_model.safetensors") for f in (single, nodes))
    weight_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"2 nodes x 1 process vs 1 process: largest loss difference {loss_diff:.2e}, weight {weight_diff:.2e}")
    assert loss_diff < 1e-4 and weight_diff < 1e-5
    card = json.loads((nodes / "models/m0/card.json").read_text())
    single_card = json.loads((single / "models/m0/card.json").read_text())
    assert card["engine"] == {"kind": "ddp", "processes": 2, "backend": "gloo"}
    assert card["plan"]["grad_accum"] == 1 and single_card["plan"]["grad_accum"] == 2
    for key in ("tokens", "trained_tokens", "steps", "examples"):
        assert card[key] == single_card[key], key


def test_the_two_node_runtime_file_launches_across_both_nodes(tmp_path, monkeypatch):
    """configs/runtime/nodes-2x8gpu.yaml on the paper profile: every tracked param as before, and a node's copy of
    the stage launches ZeRO-3 over 2 × 8 processes, which the paper's batch of 32 divides (micro-batch 2)."""
    from humpback.params import load_params
    from humpback.profiles import apply, apply_runtime
    from humpback.training.plan import TrainPlan

    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    apply("paper", params_file)
    tracked = load_params(params_file)
    apply_runtime("nodes-2x8gpu", params_file)
    params = load_params(params_file)
    assert dataclasses.replace(params, runtime=tracked.runtime) == tracked
    monkeypatch.chdir(REPO)  # the config path is relative to the checkout, as under dvc repro
    cmd = launch_command(
        params.runtime.launcher,
        "stages.train",
        ARGV,
        env={ON_NODE_ENV: "1", "SLURM_NODEID": "1", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"},
    )
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
    assert args.use_deepspeed and (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 16)
    plan = TrainPlan.from_params(params.train, 3_200 + 41_821, world_size=args.num_processes)
    assert (plan.batch_size, plan.micro_batch_size, plan.grad_accum) == (32, 2, 1)
