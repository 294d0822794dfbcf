"""How formatted prompts become token ids, shared by the engines that tokenize locally.

One rule everywhere: a prompt is tokenized as training tokenizes a prefix (`add_special_tokens=False`; the
chat template writes any special tokens itself), so generation continues exactly the trained token sequence.
"""

from __future__ import annotations

from humpback.prompts import end_of_turn_token


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    return tokenizer(prompts, add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer) -> list[int]:
    """The end-of-turn token of the template (when it is one token) and eos."""
    ids = set()
    eot = tokenizer.encode(end_of_turn_token(tokenizer), add_special_tokens=False)
    if len(eot) == 1:
        ids.add(eot[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def first_token_after(tokenizer, prompt: str, prompt_ids: list[int], candidate: str) -> int:
    """The token a model would emit first when it continues `prompt` with `candidate`.

    Tokenizing the candidate on its own can differ from tokenizing it in context (sentencepiece adds a word
    prefix, BPE merges across the boundary), so read it off the joint tokenization when the prompt's tokens
    are a prefix of it, and fall back to the candidate alone otherwise.
    """
    joint = encode_prompts(tokenizer, [prompt + candidate])[0]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids)]
    return tokenizer.encode(candidate, add_special_tokens=False)[0]


def token_budget_batches(lengths: list[int], max_new_tokens: int, budget: int) -> list[list[int]]:
    """Group prompt indices into batches whose padded size fits the token budget.

    Prompts are sorted longest first, so rows of a batch have similar lengths (little padding) and the most
    memory-hungry batch runs first (an out-of-memory error shows at once, not after an hour). A batch costs
    rows x (its longest prompt + max_new_tokens): every row is padded to the longest and grows by up to
    max_new_tokens. A single prompt over the budget still runs, alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]  # sorted: the first row is the longest
            if (len(batch) + 1) * (longest + max_new_tokens) <= budget:
                batch.append(i)
                continue
        batches.append([i])
    return batches


def encode_completion_pairs(
    tokenizer, prompts: list[str], completions: list[str]
) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and completion ids, tokenized separately as training tokenizes an example: every engine's
    `completion_logprobs` scores exactly the completion's training tokens."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    prompt_ids, completion_ids = encode_prompts(tokenizer, prompts), encode_prompts(tokenizer, completions)
    if any(not p for p in prompt_ids):
        raise ValueError("completion_logprobs needs a non-empty prompt (the first token needs a context)")
    return prompt_ids, completion_ids
