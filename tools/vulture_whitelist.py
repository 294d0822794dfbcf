"""Names vulture reports as unused that are used by code vulture cannot follow; `make test` passes this file to it.

It is parsed, never run: each line names an attribute so that vulture counts it as read. A new entry needs its
reason. Hooks by convention (HTTP handlers' do_GET/log_message, Trainer callbacks' on_*, HTMLParser's handle_*,
pytest fixtures and pytestmark) are ignored in pyproject.toml's [tool.vulture] instead.
"""
# ruff: noqa: B018, F821

# read by name: getattr(params.seeds, f"training_{role}") and getattr(params.runtime, f"{stage}_base_url")
_.training_backward
_.training_m0
_.training_m1
_.training_m2
_.augment_base_url
_.curate_base_url
_.respond_base_url
_.evaluate_base_url
# torch.nn.Module.__repr__ calls it (engines/cpu_kernels.PackedLinear)
_.extra_repr
# transformers' Trainer calls these overrides (training/trainer.py) and reads the attribute
_.autocast_smart_context_manager
_._get_train_sampler
_.create_scheduler
_._created_lr_scheduler
# set for the library that reads them: ruamel.yaml's dumper, tokenizers, model configs, peft's adapter config,
# http.server's handler, accelerate's DeepSpeed plugin, deepspeed's communication backend (tests stub it)
_.preserve_quotes
_.padding_side
_.head_dim
_.num_key_value_groups
_.base_model_name_or_path
_.close_connection
_.deepspeed_fields_from_accelerate_config
_.cdb
# docs/curation.md prints the methods table with it
_.methods_table
